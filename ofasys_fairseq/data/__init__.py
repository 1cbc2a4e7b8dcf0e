"""Data: tables, vocabulary, text preprocessing and the instruction dataset."""
