"""File and sheet readers: encodings, delimiters, headers, dates, cells, and the readers built on them."""
