"""Generated protocol code for NeuroFlow's wire formats (see the .proto files here).

Regenerate with ``python proto/generate.py``; never edit the ``*_pb2*`` files.
"""
