"""TFDS dataset builders of this project (generated with Apache Beam: the `beam` extra)."""
