"""Interatomic potential model folders that ship with DefectNet (see README.md here)."""
