"""The core: codes and items (m-bit codes of any width), the prefix trie, metrics, byte
framing and the parameter-declaration helper. Imports no other layer of fedhh."""
