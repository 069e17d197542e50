"""Real talking-face videos -> ArrayRecord shards of `data_pipelines.schema` clips.

decode (PyAV, 25 fps / 16 kHz on the streams' timestamps) -> face_detector (MTCNN or
yours) -> scenes -> tracking -> segments -> crop -> shards; `prepare` is the command
line, `preview` renders prepared clips for a person to check.
"""
