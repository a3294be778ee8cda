"""Automated workflows: rules that fire downstream work on lead and trial events, exactly once."""
