"""The demo main job: every stage on rendered videos, and its HTML report."""
