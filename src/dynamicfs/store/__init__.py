"""The extent store: seal, encode, place and write fragments; read, verify and decode."""
