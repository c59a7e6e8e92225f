"""X.509 for the emulated SPDM endpoint: certificate chains, their checks and test material.

* :mod:`emulator.x509.chain`: the SPDM certificate-chain format (DSP0274 "Certificate chain
  format") and DER splitting; what the core (device, responder, session) imports.
* :mod:`emulator.x509.model`: one slot's chain in memory (:class:`~emulator.x509.model.Chain`),
  key algorithms, the PCI identity a Linux CMA requester checks, the SPDM OIDs.
* :mod:`emulator.x509.checks`: the X.509 rules a chain must pass (``certs verify``).
* :mod:`emulator.x509.generate`: chain generation (test keys only).
* :mod:`emulator.x509.files`: slot directories on disk (write, load).

The ``spdm-emulator certs`` command lives in :mod:`emulator.cli`.
"""
