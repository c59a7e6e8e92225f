"""Cryptographic primitives for SPDM: the one place that touches ``cryptography``.

Pure functions over bytes, shared by the responder and the test-side requester:

* :mod:`.hashes` - BaseHashAlgo / MeasurementHashAlgo digests.
* :mod:`.asym` - signatures (RSASSA, RSAPSS, ECDSA, EdDSA, 1.4 ML-DSA) and the SPDM 1.2+
  signing prefix.
* :mod:`.dhe` - SECP and FFDHE key exchange with an injected random source.
* :mod:`.kem` - SPDM 1.4 ML-KEM key encapsulation (KEY_EXCHANGE with a KEM AlgStruct).
* :mod:`.aead` - AES-GCM and ChaCha20-Poly1305.
* :mod:`.kdf` - HMAC and HKDF.
* :mod:`.keyschedule` - the DSP0274 key schedule.
"""

from emulator.crypto.aead import AEAD_IV_SIZE, AEAD_TAG_SIZE, aead_key_size, aead_open, aead_seal
from emulator.crypto.asym import (
    CHALLENGE_AUTH_SIGN_CONTEXT,
    ENDPOINT_INFO_SIGN_CONTEXT,
    FINISH_SIGN_CONTEXT,
    KEY_EXCHANGE_RSP_SIGN_CONTEXT,
    MEASUREMENTS_SIGN_CONTEXT,
    MUT_CHALLENGE_AUTH_SIGN_CONTEXT,
    MUT_ENDPOINT_INFO_SIGN_CONTEXT,
    SIGNING_CONTEXT_SIZE,
    PrivateKey,
    PublicKey,
    asym_algo_for_key,
    check_key_matches,
    is_pqc,
    load_certificate,
    load_private_key,
    public_key_of_cert,
    sign,
    sign_digest,
    signature_size,
    signing_prefix,
    spdm_sign,
    spdm_sign_hash,
    spdm_sign_message,
    spdm_sign_message_from_hash,
    spdm_verify,
    spdm_verify_hash,
    verify,
    verify_digest,
)
from emulator.crypto.dhe import (
    FFDHE_PRIMES,
    DheKeyPair,
    Rng,
    dhe_exchange_size,
    dhe_shared_secret_size,
    generate_dhe_key,
)
from emulator.crypto.hashes import (
    HashObject,
    cryptography_hash,
    digest,
    hash_name,
    hash_size,
    measurement_digest,
    measurement_hash_size,
    measurement_to_base_hash,
    new_hash,
)
from emulator.crypto.kdf import hkdf_expand, hkdf_extract, hmac_digest
from emulator.crypto.kem import (
    KemKeyPair,
    exchange_sizes,
    kem_ciphertext_size,
    kem_encap_key_size,
    kem_encapsulate,
    kem_supported,
)
from emulator.crypto.keyschedule import (
    DataSecrets,
    HandshakeSecrets,
    KeySchedule,
    TrafficKeys,
    bin_str,
)

__all__ = [
    "AEAD_IV_SIZE",
    "AEAD_TAG_SIZE",
    "CHALLENGE_AUTH_SIGN_CONTEXT",
    "ENDPOINT_INFO_SIGN_CONTEXT",
    "FFDHE_PRIMES",
    "FINISH_SIGN_CONTEXT",
    "KEY_EXCHANGE_RSP_SIGN_CONTEXT",
    "MEASUREMENTS_SIGN_CONTEXT",
    "MUT_CHALLENGE_AUTH_SIGN_CONTEXT",
    "MUT_ENDPOINT_INFO_SIGN_CONTEXT",
    "SIGNING_CONTEXT_SIZE",
    "DataSecrets",
    "DheKeyPair",
    "HandshakeSecrets",
    "HashObject",
    "KemKeyPair",
    "KeySchedule",
    "PrivateKey",
    "PublicKey",
    "Rng",
    "TrafficKeys",
    "aead_key_size",
    "aead_open",
    "aead_seal",
    "asym_algo_for_key",
    "bin_str",
    "check_key_matches",
    "cryptography_hash",
    "dhe_exchange_size",
    "dhe_shared_secret_size",
    "digest",
    "exchange_sizes",
    "generate_dhe_key",
    "hash_name",
    "hash_size",
    "hkdf_expand",
    "hkdf_extract",
    "hmac_digest",
    "is_pqc",
    "kem_ciphertext_size",
    "kem_encap_key_size",
    "kem_encapsulate",
    "kem_supported",
    "load_certificate",
    "load_private_key",
    "measurement_digest",
    "measurement_hash_size",
    "measurement_to_base_hash",
    "new_hash",
    "public_key_of_cert",
    "sign",
    "sign_digest",
    "signature_size",
    "signing_prefix",
    "spdm_sign",
    "spdm_sign_hash",
    "spdm_sign_message",
    "spdm_sign_message_from_hash",
    "spdm_verify",
    "spdm_verify_hash",
    "verify",
    "verify_digest",
]
