"""Feature-extractor plugins: one file per extractor; the file name is the registry key."""
