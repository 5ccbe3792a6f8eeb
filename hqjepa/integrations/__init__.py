"""Bridges to other frameworks, each imported only by whoever uses that framework (terratorch)."""
