"""The `talking_faces` TFDS dataset: talking-face videos prepared as `synclipmae-prepare` prepares
them, generated with Apache Beam (talking_faces_dataset_builder.py)."""
