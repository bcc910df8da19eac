"""Ideators propose research ideas; implementers turn them into code changes."""
