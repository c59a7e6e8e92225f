"""``spdm-emulator``: serve a device, probe one, manage profiles and certificates.

``spdm-emulator`` with no arguments serves the default profile on
127.0.0.1:2323 over PCI DOE, which is what ``qemu-system-x86_64 -device
nvme,...,spdm_port=2323`` connects to.

Every option of every command is declared here; ``serve``'s defaults are the fields'
defaults of :class:`~emulator.options.RunOptions`, which :func:`run_options` builds from
the parsed flags for :class:`~emulator.app.Emulator`.  The parts behind the flags
(faults, MQTT, trace, the probe's authentication) are plain functions taking values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from emulator import __version__
from emulator.errors import EmulatorError, ProfileError
from emulator.options import RunOptions

if TYPE_CHECKING:
    from emulator.faults.model import FaultRule

log = logging.getLogger("emulator")

LOG_LEVELS = ("debug", "info", "warning", "error")
#: where ``serve`` reads the MQTT password when ``--mqtt-password`` is not given (a
#: command line is visible to other users)
PASSWORD_ENV = "SPDM_EMULATOR_MQTT_PASSWORD"
#: ``serve``'s defaults (and probe's transport): RunOptions' field defaults
_RUN = RunOptions()


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (no usage dump) on a bad flag value."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def _size(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a number") from None
    if value < 64 or value > 0x1000000:
        raise argparse.ArgumentTypeError(f"size {value} is outside 64..16 MiB")
    return value


def _whole(text: str, what: str = "") -> int:
    """A number 0 or more (decimal or 0x hex)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{what}{value} is negative")
    return value


def _count(text: str) -> int:
    return _whole(text)


def _seed(text: str) -> int:
    try:
        return _whole(text, "seed ")
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (seeds are 0 or more)") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text or _RUN.host, _RUN.port
    return host or _RUN.host, _port(port)


def _function_id(text: str) -> int:
    """``--tdisp FUNCTION_ID``: a Requester ID (bus << 8 | device << 3 | function)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"function ID {text!r} is not a number") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"function ID 0x{value:X} is not a 16-bit Requester ID")
    return value


def _fault_rule(text: str) -> FaultRule:
    """``--fault SPEC``: the parsed rule (origin ``cli``), or an error naming the key."""
    from emulator.faults.model import FaultSpecError
    from emulator.faults.spec import parse_fault_spec

    try:
        return parse_fault_spec(text, origin="cli")
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mutate(text: str) -> str:
    """``--mutate SEED[:RATE]``, checked (the rule is made by the app)."""
    from emulator.faults.hostile import parse_mutate

    try:
        parse_mutate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _transports() -> tuple[str, ...]:
    """``--transport`` choices: the names of the binding registry."""
    from emulator.transport import BINDINGS

    return tuple(BINDINGS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spdm-emulator",
        description="Emulate the device side (responder) of DMTF SPDM over the spdm-emu / QEMU "
        "platform socket.  With no command: serve the default profile on 127.0.0.1:2323 (DOE).",
    )
    parser.add_argument("--version", action="version", version=f"spdm-emulator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="serve an emulated SPDM device (the default command)",
        description="Serve an emulated SPDM device on a TCP port, for QEMU "
        "(-device nvme,...,spdm_port=PORT), libspdm's requester or any platform-socket client.",
    )
    add_serve_arguments(serve)

    probe = sub.add_parser(
        "probe",
        help="connect to a device and print what it offers",
        description="Run an SPDM requester against HOST:PORT and print what the device offers. "
        "Exit status 0 when the device answered as the spec says.",
    )
    probe.add_argument(
        "address",
        nargs="?",
        default=None,
        type=_host_port,
        metavar="HOST:PORT",
        help="device address (default 127.0.0.1:2323; 127.0.0.1:4194 with --transport tcp)",
    )
    probe.add_argument("--transport", choices=_transports(), default=_RUN.transport)
    probe.add_argument(
        "--platform-frames",
        action="store_true",
        help="tcp: DSP0287 messages inside platform-socket frames, as spdm-emu's --trans TCP "
        "(default: DSP0287 on the stream)",
    )
    probe.add_argument(
        "--spdm-version",
        choices=("1.0", "1.1", "1.2", "1.3", "1.4"),
        help="force this SPDM version (default: the highest common one)",
    )
    probe.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS")
    probe.add_argument(
        "--busy-retries",
        type=_count,
        default=3,
        metavar="N",
        help="send a request answered ERROR(Busy) again up to N times (default 3; "
        "ResponseNotReady is always followed by RESPOND_IF_READY); the report lists the retries",
    )
    probe.add_argument(
        "--busy-delay",
        type=_positive_float,
        default=0.1,
        metavar="SECONDS",
        help="wait between Busy retries (default 0.1)",
    )
    probe.add_argument("--json", action="store_true", help="print a JSON report")
    probe.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    add_probe_auth_arguments(probe)
    # ---- TDISP (emulator.requester.tdisp): lock, report, start, stop one TDI ------------
    probe.add_argument(
        "--tdisp",
        nargs="?",
        const=0xBEEF,
        type=_function_id,
        metavar="FUNCTION_ID",
        help="then drive TDISP in a secure session: program IDE keys for stream 0, lock "
        "the TDI, read its report, start it with the lock's nonce, stop it "
        "(FUNCTION_ID: the Requester ID of the TDI, default 0xBEEF)",
    )

    profiles = sub.add_parser("profiles", help="list, show or check device profiles")
    psub = profiles.add_subparsers(
        dest="profiles_command", metavar="{list,show,check}", parser_class=_Parser
    )
    psub.required = True
    psub.add_parser("list", help="list the shipped profiles (exit status 1 if one is invalid)")
    show = psub.add_parser("show", help="print a profile after validation, as JSON")
    show.add_argument("profile", help="profile name or file")
    check = psub.add_parser("check", help="validate profile files")
    check.add_argument("profile", nargs="+", help="profile names or files")

    add_certs_subparser(sub)  # type: ignore[arg-type]
    add_state_subparser(sub)  # type: ignore[arg-type]
    return parser


def _run_option(parser: Any, flag: str, **kwargs: Any) -> None:
    """Declare the flag that sets one :class:`RunOptions` field: its dest is the field
    (``--max-payload`` -> ``max_payload``, or ``dest=``) and its default the field's."""
    dest = kwargs.setdefault("dest", flag.removeprefix("--").replace("-", "_"))
    default = getattr(_RUN, dest)  # AttributeError: a serve flag without a field
    parser.add_argument(
        flag, default=list(default) if isinstance(default, tuple) else default, **kwargs
    )


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """Every ``serve`` flag; each one but ``--log-level`` and ``--event-loop`` (how this
    process runs, not what the emulator does) sets a :class:`RunOptions` field."""
    from emulator.faults.spec import FAULT_HELP

    option = functools.partial(_run_option, serve)
    option(
        "--profile",
        metavar="FILE|NAME",
        help=f"device profile: a TOML file or a shipped profile name "
        f"(default: {_RUN.profile}; see 'spdm-emulator profiles list')",
    )
    option("--host", help="address to listen on")
    option(
        "--port",
        type=_port,
        help=f"TCP port (default {_RUN.port}; the binding's own for tcp: DSP0287's 4194)",
    )
    serve.set_defaults(port=None)  # run_options: the binding's default port
    option(
        "--transport",
        choices=_transports(),
        help=f"transport binding inside the socket frames (default {_RUN.transport}, as QEMU)",
    )
    option(
        "--max-payload",
        type=_size,
        metavar="BYTES",
        help=f"largest accepted frame payload (default {_RUN.max_payload:#x}, QEMU's buffer)",
    )
    option(
        "--idle-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="close connections silent for this long (default: never)",
    )
    option(
        "--max-connections",
        type=int,
        metavar="N",
        help=f"connections served at once (default {_RUN.max_connections})",
    )
    option(
        "--frame-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="close a connection whose frame is not complete this long after it started, "
        f"or that does not read a reply (slow peers; default {_RUN.frame_timeout:g})",
    )
    option(
        "--seed",
        type=_seed,
        metavar="N",
        help="deterministic mode: nonces, DHE keys and padding from this seed; each "
        "connection draws from its own stream (seed, device name, connection number), so a "
        "run repeated with the same requests gives the same bytes on every connection",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="info logs every exchange by name; debug adds hex dumps",
    )
    serve.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="asyncio event loop: uvloop (installed by the [fast] extra: about a quarter "
        "less server CPU per message, see bench/README.md) or the standard one; auto "
        "(default): uvloop when it is installed",
    )
    # fault injection (emulator.faults): the app adds the rules after the profile's
    option(
        "--fault", dest="faults", action="append", type=_fault_rule, metavar="SPEC", help=FAULT_HELP
    )
    option(
        "--fault-seed",
        type=_seed,
        metavar="N",
        help="seed of the probabilistic faults (default: the profile's [determinism] seed, or 0)",
    )
    option(
        "--mutate",
        type=_mutate,
        metavar="SEED[:RATE]",
        help="hostile device: mutate a RATE share (default 0.1) of the responses with "
        "seeded, structure-aware lies (same seed + same requests = same bytes); the "
        "fault rule id=mutate,do=mutate,seed=SEED,prob=RATE",
    )
    # the MQTT control plane (emulator.control): off unless --mqtt or [mqtt] enabled = true;
    # the flags override the profile's [mqtt] values
    mqtt = functools.partial(
        _run_option,
        serve.add_argument_group("MQTT control plane (off unless --mqtt or [mqtt] enabled)"),
    )
    mqtt(
        "--mqtt",
        metavar="HOST[:PORT]",
        help="publish telemetry to this MQTT broker and take commands from it "
        "(topics spdm-emulator/<device>/...; see 'Fault injection' in README.md)",
    )
    mqtt("--mqtt-username", metavar="NAME")
    mqtt("--mqtt-password", metavar="PASSWORD", help=f"(or set {PASSWORD_ENV})")
    mqtt("--mqtt-tls", action="store_true", help="connect with TLS")
    mqtt("--mqtt-ca", metavar="FILE", help="CA certificates (PEM) for TLS")
    mqtt("--mqtt-cert", metavar="FILE", help="client certificate (PEM) for TLS")
    mqtt("--mqtt-key", metavar="FILE", help="client key (PEM) for TLS")
    mqtt("--mqtt-insecure", action="store_true", help="TLS without checking the broker")
    mqtt("--mqtt-topic-prefix", metavar="PREFIX")
    # provisioned state (emulator.device.store; issue 14): a small block of its own
    add_state_arguments(serve)
    # observers (emulator.trace)
    option(
        "--trace",
        metavar="FILE|-",
        help="write a decoded line per SPDM message to FILE (appended) or '-' for stderr",
    )
    option(
        "--pcap",
        metavar="FILE",
        help="capture the transport messages in pcap format for DMTF spdm_dump / tshark "
        "(link type 292 PCI DOE, 291 MCTP; 147 storage, 148 TCP: tcpdump's private range); "
        "'{conn}' in FILE makes one file per connection",
    )
    option(
        "--keylog",
        metavar="FILE",
        help="append every secure session's DHE secret or PSK to FILE, as spdm_dump's "
        "--dhe_secret / --psk take them (decrypts --pcap captures; anyone who reads FILE "
        "can decrypt the sessions: test use only)",
    )


def _default_port(transport: str) -> int:
    """The port of a binding when none is given (2323; tcp: DSP0287's 4194)."""
    from emulator.transport import get_binding

    return get_binding(transport).default_port


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` of a parsed ``serve`` command line.

    Every flag's dest is a field name; the MQTT password falls back to ``$PASSWORD_ENV``.
    """
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(RunOptions) if hasattr(args, f.name)
    }
    values["faults"] = tuple(values.get("faults", ()))
    if values.get("port") is None:  # no --port: the transport binding's default port
        values["port"] = _default_port(values.get("transport", _RUN.transport))
    values["mqtt_password"] = values.get("mqtt_password") or os.environ.get(PASSWORD_ENV)
    return RunOptions(**values)


def add_probe_auth_arguments(probe: argparse.ArgumentParser) -> None:
    """``probe``'s authentication flags (:func:`emulator.requester.probe.probe_device`)."""
    from emulator.requester.probe import MODES, QEMU_NVME_SAN

    probe.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="spdm: VCA, digests, certificate, challenge, measurements, as libspdm's requester "
        "(default); linux-cma: the Linux kernel's CMA authentication sequence and rules",
    )
    probe.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="FILE",
        help="trusted root certificate (DER or PEM), repeatable; linux-cma needs one "
        "(as the guest's .cma keyring); spdm mode then also checks the chain reaches it",
    )
    probe.add_argument(
        "--san",
        default=QEMU_NVME_SAN,
        metavar="TEXT",
        help="linux-cma: the PCI CMA subjectAltName the kernel expects "
        f"(default: QEMU NVMe, {QEMU_NVME_SAN})",
    )
    probe.add_argument(
        "--no-auth", action="store_true", help="spdm mode: stop after VCA (no signatures)"
    )


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


#: ``serve --event-loop`` choices
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def event_loop_runner(choice: str) -> tuple[Callable[[Coroutine[Any, Any, int]], int], str]:
    """How ``serve`` runs its coroutine: ``uvloop.run`` or ``asyncio.run``, and the name.

    ``auto`` takes uvloop when it can be imported (``pip install 'spdm-emulator[fast]'``)."""
    if choice not in EVENT_LOOPS:
        raise EmulatorError(f"--event-loop {choice}: not one of {', '.join(EVENT_LOOPS)}")
    if choice != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")  # optional: the [fast] extra
        except ImportError:
            if choice == "uvloop":
                raise EmulatorError(
                    "--event-loop uvloop: uvloop is not installed "
                    "(pip install 'spdm-emulator[fast]')"
                ) from None
        else:
            runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
            return runner, "uvloop"
    return asyncio.run, "asyncio"


async def _serve(args: argparse.Namespace) -> int:
    from emulator.app import Emulator

    options = run_options(args)
    try:
        emulator = Emulator(options)
        await emulator.start()
    except OSError as exc:
        print(
            f"spdm-emulator: cannot listen on {options.host}:{options.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    # what is alive now (profile, certificates, keys, code) lives as long as the process:
    # the garbage collector's later passes need not scan it again (gc.freeze)
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    dev = emulator.device
    print(
        f"spdm-emulator {__version__}: device '{dev.name}' "
        f"(SPDM {', '.join(v.text for v in dev.versions)}) listening on "
        f"{args.host}:{emulator.port}, transport {args.transport}\n"
        f"  {emulator.binding.client_hint.format(port=emulator.port)}\n"
        f"  Provisioned state: {emulator.state_store.location}\n"
        f"  Stop with Ctrl-C.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await emulator.stop()
    return 0


async def _probe(args: argparse.Namespace) -> int:
    from emulator.codec.constants import (
        AeadSuite,
        AlgType,
        BaseAsymAlgo,
        BaseHashAlgo,
        DheGroup,
        KemAlgo,
        MeasurementHashAlgo,
        MelSpec,
        PqcAsymAlgo,
        ResponderCap,
        SpdmVersion,
    )
    from emulator.requester import Requester, RequesterConfig
    from emulator.requester.probe import probe_device
    from emulator.requester.transport import open_client
    from emulator.transport import get_binding

    binding = get_binding(args.transport)
    host, port = args.address or (_RUN.host, binding.default_port)
    if args.mode == "linux-cma" and not args.root:
        print(
            "spdm-emulator probe: error: --mode linux-cma needs --root FILE (the root the "
            "guest's .cma keyring trusts)",
            file=sys.stderr,
        )
        return 2
    for name in args.root:
        if not os.path.isfile(name) or not os.access(name, os.R_OK):
            print(f"spdm-emulator probe: error: --root {name}: cannot read it", file=sys.stderr)
            return 2
    # as libspdm's requester: ResponseNotReady -> RESPOND_IF_READY, Busy -> sent again
    config = RequesterConfig(
        busy_retries=args.busy_retries,
        busy_delay=args.busy_delay,
        respond_if_ready=True,
        mel_spec=int(MelSpec.DMTF),  # 1.3: read the MEL if offered
    )
    requester: Requester | None = None
    if args.spdm_version:
        config.version = int(SpdmVersion.from_text(args.spdm_version))
    report: dict[str, Any] = {"address": f"{host}:{port}", "transport": args.transport}
    try:
        async with open_client(
            host, port, binding, timeout=args.timeout, platform_frames=args.platform_frames
        ) as client:
            requester = Requester(client, config)
            neg = await requester.vca()
            alg = neg.algorithms
            assert alg is not None

            def names(enum: Any, value: int) -> str:
                return enum(value).name if value else "-"

            report.update(
                ok=True,
                versions=[f"{v >> 4}.{v & 0xF}" for v in neg.versions],
                version=f"{neg.version >> 4}.{neg.version & 0xF}",
                ct_exponent=neg.rsp_ct_exponent,
                capabilities=[f.name for f in ResponderCap if f & neg.rsp_flags],
                data_transfer_size=neg.rsp_data_transfer_size,
                max_spdm_msg_size=neg.rsp_max_spdm_msg_size,
                base_asym=names(BaseAsymAlgo, alg.base_asym_sel),
                base_hash=names(BaseHashAlgo, alg.base_hash_sel),
                measurement_hash=names(MeasurementHashAlgo, alg.measurement_hash_algo),
                dhe=names(DheGroup, alg.struct_value(AlgType.DHE)),
                aead=names(AeadSuite, alg.struct_value(AlgType.AEAD)),
            )
            if neg.version >= 0x14:  # SPDM 1.4: the post-quantum selections
                report.update(
                    pqc_asym=names(PqcAsymAlgo, alg.pqc_asym_sel),
                    kem=names(KemAlgo, alg.struct_value(AlgType.KEM)),
                )
            await probe_device(
                requester,
                report,
                mode=args.mode,
                root_files=args.root,
                san=args.san,
                no_auth=args.no_auth,
            )
            # ---- TDISP (probe --tdisp) ---------------------------------------------------
            if args.tdisp is not None:
                from emulator.requester.tdisp import probe_tdisp

                await probe_tdisp(requester, report, function_id=args.tdisp, binding=args.transport)
    except (TimeoutError, EmulatorError, OSError) as exc:
        report.update(ok=False, error=str(exc) or type(exc).__name__)
    if requester is not None and requester.retries:
        report["retries"] = list(requester.retries)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    return 0 if report.get("ok") else 1


def _print_human(report: dict[str, Any], indent: str = "") -> None:
    """key/value lines; nested dicts indented, lists of dicts one item a line."""
    width = max(20 - len(indent), 8)
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{indent}{key}")
            _print_human(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{indent}{key}")
            for item in value:
                print(f"{indent}  - " + "  ".join(f"{k}={v}" for k, v in item.items()))
        elif isinstance(value, list) and any(len(str(v)) > 40 for v in value):
            print(f"{indent}{key}")  # long lines (probe's retries): one a line
            for item in value:
                print(f"{indent}  - {item}")
        else:
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value) or "-"
            print(f"{indent}{key:{width}} {value}")


def _profiles(args: argparse.Namespace) -> int:
    from emulator.profiles import PROFILES_DIR, list_profiles, load_profile

    if args.profiles_command == "list":
        shipped = list_profiles()
        if not shipped:
            print(f"spdm-emulator: no shipped profiles in {PROFILES_DIR}", file=sys.stderr)
            return 1
        for name, description, _valid in shipped:
            print(f"{name:20} {description}")
        return 0 if all(valid for _name, _description, valid in shipped) else 1
    if args.profiles_command == "show":
        shown = load_profile(args.profile).model_dump(mode="json")
        pci = shown.get("device", {}).get("pci")
        if isinstance(pci, dict):  # PCI IDs as lspci and the certificates write them
            widths = {"class_code": 6, "revision": 2}
            for key, value in pci.items():
                if isinstance(value, int):
                    pci[key] = f"0x{value:0{widths.get(key, 4)}x}"
        print(json.dumps(shown, indent=2))
        return 0
    status = 0
    for name in args.profile:
        try:
            load_profile(name)
            print(f"{name}: ok")
        except ProfileError as exc:
            print(f"{exc}", file=sys.stderr)
            status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spdm-emulator`` console script."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        # the reader went away (``probe ... | head -3``): stop quietly, as a shell tool does
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the pipe


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "serve":
            _setup_logging(args.log_level)
            run, name = event_loop_runner(args.event_loop)
            log.info("event loop: %s", name)
            return run(_serve(args))
        if args.command == "probe":
            _setup_logging(args.log_level)
            return asyncio.run(_probe(args))
        if args.command == "profiles":
            return _profiles(args)
        if args.command == "certs":
            return run_certs(args)
        if args.command == "state":
            return run_state(args)
    except ProfileError as exc:
        print(f"spdm-emulator: profile error: {exc}", file=sys.stderr)
        return 2
    except EmulatorError as exc:
        print(f"spdm-emulator: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 2


# --- certs generate | verify (emulator.x509: generation, checks, slot files) ----------------

_GENERATE_HELP = """\
Generate SPDM test certificate chains (root CA -> intermediate CA -> leaf; with
--model alias: root -> intermediate -> DeviceCert CA -> alias leaf).

Layout: with one --asym, slots go to DIR/slot<N>/; with several, to
DIR/<asym>/slot<N>/.  Each slot gets an independent chain (its own keys and DNs).
--slots N with --first-slot K writes slots K..K+N-1 (SPDM has slots 0..7).

Each slot directory holds root/intermediate[/device_ca]/leaf .der and .pem,
leaf.key.pem (PKCS#8, UNENCRYPTED: test keys only), chain.der/chain.pem (root
first) and info.json.  Install a root in a Linux guest with:
  keyctl padd asymmetric "" %:.cma < DIR/slot0/root.der

An existing non-empty slot directory is refused unless --force.
"""


def add_certs_subparser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs generate`` and ``certs verify`` to a CLI's subparsers."""
    from emulator.x509.model import ASYM_NAMES, PQC_ASYM_NAMES, QEMU_NVME_PCI_IDS

    certs = subparsers.add_parser(
        "certs",
        help="generate or check SPDM test certificate chains",
        description="Generate or check SPDM test certificate chains (test keys only).",
    )
    sub = certs.add_subparsers(dest="certs_command", metavar="{generate,verify}")
    sub.required = True
    gen = sub.add_parser(
        "generate",
        help="generate certificate chains into a directory",
        description=_GENERATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory")
    gen.add_argument(
        "--asym",
        action="append",
        metavar="ALG[,ALG...]",
        help=f"key algorithm, repeatable or comma-separated, 'all' ({', '.join(ASYM_NAMES)}) "
        f"or 'pqc' (SPDM 1.4: {', '.join(PQC_ASYM_NAMES)}); default ecdsa-p384",
    )
    gen.add_argument(
        "--slots",
        type=int,
        default=1,
        metavar="N",
        help="number of slots per algorithm (default 1)",
    )
    gen.add_argument(
        "--first-slot", type=int, default=0, metavar="K", help="first slot number (default 0)"
    )
    gen.add_argument(
        "--pci-ids",
        metavar="VENDOR:DEVICE:CC:REV[:SSVID:SSID[:DSN]]",
        help="hex PCI identity for the leaf's subjectAltName (Linux CMA checks it); "
        f"default {QEMU_NVME_PCI_IDS.spec()} (QEMU NVMe) for responder chains, none for "
        "--requester; 'none' omits the subjectAltName",
    )
    gen.add_argument(
        "--model",
        choices=("device", "alias"),
        default="device",
        help="DSP0274 1.3 certificate model (default device)",
    )
    gen.add_argument(
        "--requester",
        action="store_true",
        help="requester chains for mutual authentication (EKU requester-auth)",
    )
    gen.add_argument(
        "--hash",
        metavar="HASH",
        help="certificate signature hash sha256|sha384|sha512 (default by key size; "
        "not used for EdDSA)",
    )
    gen.add_argument(
        "--not-before", metavar="YYYY-MM-DD", help="validity start (default: yesterday, UTC)"
    )
    gen.add_argument(
        "--not-after",
        metavar="YYYY-MM-DD",
        help="validity end, inclusive (23:59:59 UTC); default not-before + --days",
    )
    gen.add_argument(
        "--days", type=int, default=10950, metavar="N", help="validity in days (default 10950)"
    )
    gen.add_argument(
        "--subject-prefix",
        default="spdm-emulator",
        metavar="TEXT",
        help="organisation name in every DN (default spdm-emulator)",
    )
    gen.add_argument("--force", action="store_true", help="overwrite existing slot directories")
    ver = sub.add_parser(
        "verify",
        help="check slot directories written by 'certs generate'",
        description="Load each slot directory and check links, signatures, CA flags, the "
        "leaf's basicConstraints and that leaf.key.pem matches the leaf.",
    )
    ver.add_argument("slot_dirs", nargs="+", metavar="SLOT_DIR")


def _certs_date(text: str, what: str, end_of_day: bool) -> datetime.datetime:
    from emulator.x509.chain import CertError

    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise CertError(f"{what}: {text!r} is not a date YYYY-MM-DD") from None
    return day + datetime.timedelta(hours=23, minutes=59, seconds=59) if end_of_day else day


def _certs_asyms(values: Sequence[str] | None) -> list[str]:
    from emulator.x509.chain import CertError
    from emulator.x509.model import ASYM_NAMES, PQC_ASYM_NAMES, asym_spec

    if not values:
        return ["ecdsa-p384"]
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if not name:
                continue
            groups = {"all": ASYM_NAMES, "pqc": PQC_ASYM_NAMES}
            names = list(groups.get(name, (name,)))
            for n in names:
                asym_spec(n)
                if n not in out:
                    out.append(n)
    if not out:
        raise CertError("asym: no algorithm given")
    return out


def _certs_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emulator.x509.chain import CertError, normalise_hash_name
    from emulator.x509.files import write_chain
    from emulator.x509.generate import CERT_HASH_NAMES, generate_chain
    from emulator.x509.model import QEMU_NVME_PCI_IDS, PciIds, Role, asym_spec

    asyms = _certs_asyms(args.asym)
    if args.slots < 1 or args.first_slot < 0 or args.first_slot + args.slots > 8:
        raise CertError(
            f"slots: --first-slot {args.first_slot} --slots {args.slots} leaves SPDM slots 0..7"
        )
    role: Role = "requester" if args.requester else "responder"
    pci_ids: PciIds | None
    if args.pci_ids is None:
        pci_ids = None if args.requester else QEMU_NVME_PCI_IDS
    elif args.pci_ids.strip().lower() == "none":
        pci_ids = None
    else:
        pci_ids = PciIds.parse(args.pci_ids)
    hash_name = None if args.hash is None else normalise_hash_name(args.hash, CERT_HASH_NAMES)
    not_before = _certs_date(args.not_before, "--not-before", False) if args.not_before else None
    not_after = _certs_date(args.not_after, "--not-after", True) if args.not_after else None
    out = Path(args.out)
    slots = range(args.first_slot, args.first_slot + args.slots)
    targets = [(a, out / a if len(asyms) > 1 else out) for a in asyms]
    if not args.force:
        for _, base in targets:
            for slot in slots:
                d = base / f"slot{slot}"
                if d.is_dir() and any(d.iterdir()):
                    raise CertError(f"{d}: exists and is not empty (use --force to overwrite)")
                if d.exists() and not d.is_dir():
                    raise CertError(f"{d}: exists and is not a directory")
    for asym, base in targets:
        spec = asym_spec(asym)
        for slot in slots:
            chain = generate_chain(
                asym,
                hash_name=hash_name if spec.default_hash is not None else None,
                pci_ids=pci_ids,
                model=args.model,
                validity_days=args.days,
                not_before=not_before,
                not_after=not_after,
                subject_prefix=args.subject_prefix,
                label=f"slot{slot}",
                role=role,
            )
            slot_dir = write_chain(chain, base, slot)
            print(f"{slot_dir}: {asym} {args.model} {role} chain")
    return 0


def _certs_verify(args: argparse.Namespace) -> int:
    from emulator.x509.files import load_chain

    for d in args.slot_dirs:
        chain = load_chain(d)
        leaf = chain.leaf
        print(
            f"{d}: OK {chain.asym} {chain.model} {chain.role}, {len(chain.certs)} certificates, "
            f"leaf valid {leaf.not_valid_before_utc:%Y-%m-%d}..{leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    return 0


def run_certs(args: argparse.Namespace) -> int:
    """Run ``certs generate|verify``; errors print one line on stderr and return 2."""
    from emulator.x509.chain import CertError

    try:
        if args.certs_command == "generate":
            return _certs_generate(args)
        if args.certs_command == "verify":
            return _certs_verify(args)
        raise CertError(f"certs: unknown command {args.certs_command!r}")
    except CertError as exc:
        print(f"spdm-emulator certs: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"spdm-emulator certs: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2


# --- provisioned state: serve --state-dir / --ephemeral, state show | reset -------------------
# (emulator.device.store; what SET_CERTIFICATE, SET_KEY_PAIR_INFO and GET_CSR leave behind)


def add_state_arguments(serve: argparse.ArgumentParser) -> None:
    """``serve``'s ``--state-dir`` and ``--ephemeral`` (RunOptions ``state_dir``, ``ephemeral``)."""
    group = serve.add_argument_group(
        "provisioned state (SET_CERTIFICATE, SET_KEY_PAIR_INFO, GET_CSR after a reset)"
    )
    option = functools.partial(_run_option, group)
    option(
        "--state-dir",
        metavar="DIR",
        help="keep the device's provisioned certificates and key pairs in DIR between runs "
        "(default: $XDG_DATA_HOME/spdm-emulator/state/<device>-<port>, ~/.local/share when "
        "unset; memory only on --port 0); see 'spdm-emulator state show'",
    )
    option(
        "--ephemeral",
        action="store_true",
        help="keep provisioned state in memory only: every start is the profile's state",
    )


def add_state_subparser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``state show`` and ``state reset``."""
    state = subparsers.add_parser(
        "state",
        help="show or clear a device's provisioned state (--state-dir)",
        description="Show or clear what requesters provisioned into an emulated device "
        "(SET_CERTIFICATE chains, SET_KEY_PAIR_INFO changes and generated keys, CSRs waiting "
        "for a reset).  The directory is --state-dir, or the default of --profile and "
        "--port (as 'serve' picks it).",
    )
    sub = state.add_subparsers(dest="state_command", metavar="{show,reset}", parser_class=_Parser)
    sub.required = True
    for name, text in (
        ("show", "print the stored state (with --profile: the device's whole live state)"),
        ("reset", "delete the stored state: the next start is the profile's state"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--state-dir", metavar="DIR", help="the state directory")
        cmd.add_argument(
            "--profile",
            metavar="FILE|NAME",
            help=f"the device's profile (default {_RUN.profile}): names the default directory",
        )
        cmd.add_argument(
            "--port", type=_port, default=_RUN.port, help=f"the device's port (default {_RUN.port})"
        )
        if name == "show":
            cmd.add_argument("--json", action="store_true", help="print JSON")


def _state_store(args: argparse.Namespace) -> Any:
    from emulator.device.store import DirectoryStore, default_state_dir
    from emulator.profiles import load_profile

    if args.state_dir:
        return DirectoryStore(args.state_dir), None
    profile = load_profile(args.profile or str(_RUN.profile))
    return DirectoryStore(default_state_dir(profile.device.name, args.port)), profile


def run_state(args: argparse.Namespace) -> int:
    """``state show | reset``; errors print one line and return 2."""
    from emulator.device.store import MemoryStore

    store, profile = _state_store(args)
    if args.state_command == "reset":
        holder = store.locked_by_other()
        if holder is not None:
            print(
                f"spdm-emulator state: {store.location} is in use by a running emulator "
                f"(pid {holder}); stop it first",
                file=sys.stderr,
            )
            return 2
        removed = store.clear()
        print(f"{store.location}: {'state cleared' if removed else 'nothing stored'}")
        return 0
    doc = store.load()
    report: dict[str, Any] = {"state_dir": store.location, "stored": doc is not None}
    if doc is not None:
        report["document"] = _summarise_state(doc)
    if profile is None and args.profile:
        from emulator.profiles import load_profile

        profile = load_profile(args.profile)
    if profile is not None:
        from emulator.device.model import Device

        # a read-only view: the stored state over the profile as the next start makes it
        # (a start is a device reset: pending installs complete), nothing written back
        view = MemoryStore()
        view.document = doc
        device = Device.from_profile(profile, store=view)
        if device.provisioning is not None:
            described = device.provisioning.describe()
            described.pop("store", None)  # the view's, not the state directory
            report["next_start"] = described
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    return 0


def _summarise_state(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored document with certificates as subjects and keys as their type."""
    import base64

    from cryptography import x509

    def cert_line(b64: str) -> str:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(b64))
        except ValueError as exc:
            return f"unreadable ({exc})"
        return f"{cert.subject.rfc4514_string()} (until {cert.not_valid_after_utc:%Y-%m-%d})"

    slots = []
    for entry in list(doc.get("slots") or []) + list(doc.get("pending_slots") or []):
        pending = entry in (doc.get("pending_slots") or [])
        line = {
            "slot": entry.get("slot"),
            "key_pair_id": entry.get("key_pair_id"),
            "pending_reset": pending,
        }
        if entry.get("erased"):
            line["erased"] = True
        else:
            line["leaf"] = cert_line((entry.get("certs") or [""])[-1])
            line["certificates"] = len(entry.get("certs") or [])
        slots.append(line)
    pairs = []
    for kpid, entry in sorted((doc.get("key_pairs") or {}).items(), key=lambda kv: int(kv[0])):
        key = entry.get("key", "profile")
        pairs.append(
            {
                "key_pair_id": int(kpid),
                "key": "erased" if key is None else ("stored" if key != "profile" else "profile"),
                "key_usage": f"0x{int(entry.get('key_usage', 0)):04X}",
                "asym": f"0x{int(entry.get('asym', 0)):X}",
                "assoc_slots": f"0x{int(entry.get('assoc_slots', 0)):02X}",
            }
        )
    return {
        "format": doc.get("format"),
        "device": doc.get("device"),
        "slots": slots,
        "key_pairs": pairs,
        "pending_csr_tags": [c.get("tag") for c in doc.get("pending_csrs") or []],
    }


if __name__ == "__main__":
    sys.exit(main())
