"""The core every stage shares, importing no stage: errors (``errors``), logging with
captured third-party output (``log``), progress bars (``progress``), atomic writes,
hashes and cache folders (``files``), value checks for arguments (``validate``), the
eval preprocessing (``preprocess``), the graph I/O names and opsets (``graph_io``), the
IAU plugin contract: op names, domain, kernel and PTX manifest format, alignment and
launch planning (``plugin_contract``), and CUDA driver calls through ctypes
(``cuda_driver``).

Standard library, numpy and Pillow only.
"""
