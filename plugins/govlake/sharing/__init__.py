"""Sharing zone: what leaves the lake and how (renditions, the sharing service)."""
