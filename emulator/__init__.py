"""spdm-emulator: the device side (responder) of DMTF SPDM (DSP0274/DSP0277).

The package is layered as ARCHITECTURE.md describes: ``codec`` (message layouts),
``crypto`` (all cryptography), ``responder`` (the sans-I/O protocol core),
``session`` (DSP0277 secured messages), ``transport`` (DOE/MCTP bindings),
``server`` (asyncio platform-socket server) and the tools around them.
"""

__version__ = "0.1.0"
