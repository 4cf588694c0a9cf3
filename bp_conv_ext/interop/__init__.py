"""Other frameworks' formats (imports no layer)."""
