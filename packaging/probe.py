#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Robustness probes for the neox command: bad inputs, odd files, fault injection.

    python3 packaging/probe.py --neox BUILD/bin/neox [--only CLASS[,CLASS]] [--jobs N]
                               [--report FILE] [--records FILE] [--keep] [--list]

A check tool (Python 3 standard library only; the product stays Python-free).
Everything is made in a temporary directory: a tiny dataset made with
`neox preprocess`, a tiny config derived from configs/tiny-cpu.toml, a tiny
training run with a checkpoint per step, the tiny Hugging Face model of
../shared/testdata (or one converted from the run), tokenizer files. Each
probe then runs neox in a directory of its own, with a timeout, on one bad
input or under one fault, and its outcome is classified:

  ok             valid-but-unusual input that must succeed did, with the expected output
  clear-error    non-zero exit (not by a signal), a message on stderr naming what the
                 probe says must be named (a path, a key, an option, a step), nothing
                 on stdout but the command's own output
  unclear-error  non-zero exit, but no message, the message on stdout, or it does not
                 name what it must
  plugin-crash   killed by a signal inside a deliberately crashing plugin's own code
                 (no in-process loader can survive that; issue 17 leaves it out)
  crash          killed by a signal (SIGSEGV, SIGABRT, SIGBUS, SIGPIPE, SIGXFSZ, ...)
  hang           still running at the timeout (then killed)
  silent-wrong   exit 0 where an error was due, or output, files or data wrong or lost
                 (a device replaced by a regular file, a checkpoint directory taken
                 over, corrupt weights used, output missing while exit 0), whatever
                 the exit status
  false-error    non-zero exit where success was due (valid input refused)

The exit status is 1 when any probe was a crash, hang, silent-wrong or false-error,
0 otherwise (2: the harness itself could not set up). The report has a table of
outcomes per class of probe, the totals, and one line per probe that is neither
ok nor clear-error. --records writes every probe (id, class, command line,
expected and actual outcome, exit status or signal, first line of stderr) as JSON
lines. Classes (--only takes a comma-separated list; --list prints the probes):

  issue        the items of issue 17 that fit no class below (train without a config,
               A.toml A.toml, score with every label ignored, huge integers, ...)
  output       outputs onto character devices, FIFOs, stdout on /dev/full or closed
  fifo         a FIFO (or a directory) where an input file is expected
  plugin       bad files on the plugin path; a deliberately crashing plugin
  signal       `train | head -1`, SIGHUP, a file-size limit, a dataset shrinking
  savedir      a fresh run into another run's save directory, two trainers on one
  options      unknown, malformed and missing option values of every command
  toml         mutations of a valid config: types, ranges, keys, syntax
  safetensors  structural attacks on safetensors files (model weights, token files)
  idx          structural attacks on Megatron .idx/.bin datasets
  tokenizer    tokenizer.json, vocab.json and merges.txt attacks
  hfconfig     config.json of Hugging Face directories
  checkpoint   checkpoints: each file missing, truncated or corrupted; state.json
  sigkill      SIGKILL at moments of a checkpoint save, then resume: the result must
               be bit-identical to an uninterrupted run

As root, device probes use private device nodes made with mknod in the probe's
directory, never /dev/null itself (which a faulty neox would replace).
Probes are data: each is a Probe(...) with the arguments, the expectation and
what the message must name; the generators below build them from tables.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

OUTCOMES = ["ok", "clear-error", "unclear-error", "plugin-crash", "crash", "hang", "silent-wrong", "false-error"]
FAILING = {"crash", "hang", "silent-wrong", "false-error"}
CLASSES = [
    "issue", "output", "fifo", "plugin", "signal", "savedir", "options", "toml", "safetensors", "idx", "tokenizer",
    "hfconfig", "checkpoint", "sigkill"
]

# Seconds a probe may run. Tiny models train in well under a second; FIFO and
# other "might block" probes get less so that a hang costs little.
TIMEOUT = 60
TIMEOUT_BLOCKING = 8


# ---------------------------------------------------------------------------
# Probes and results


@dataclasses.dataclass
class Probe:
    id: str  # unique, "class/what[:consumer]"
    cls: str  # one of CLASSES
    args: list = None  # neox's arguments (argv[1:]); paths relative to the probe's directory
    expect: str = "error"  # "error": a clear error is due; "ok": success; "either": a clear error or success
    names: tuple = ()  # the error (stderr) must contain each: a string, or a tuple of alternatives
    setup: object = None  # setup(ctx, d): makes the probe's files in its directory d
    check: object = None  # check(ctx, d, r) -> None or what is wrong, after exit 0 (expect ok/either)
    keep: object = None  # keep(ctx, d, r) -> None or what was lost, whatever the exit (data that must survive)
    stdout: str = "pipe"  # "pipe", "full" (/dev/full), "closed"
    stdin: bytes = None
    env: dict = None  # added to the environment
    timeout: float = TIMEOUT
    fifo_out: tuple = ()  # FIFOs (in d) the command should write; the harness reads them
    fifo_in: dict = None  # FIFOs (in d) the command may read: the harness writes these bytes into them
    wrap: list = None  # argv prefix, e.g. ["prlimit", "--fsize=1000"]
    driver: object = None  # driver(ctx, p, d) -> Result: probes of several processes or timed faults
    plugin_crash: bool = False  # a death by a signal is the deliberately crashing plugin's
    stdout_ok: bool = False  # an error may leave the command's own output on stdout
    what: str = ""  # one line for the report


@dataclasses.dataclass
class Result:
    cmd: str = ""
    rc: int = None  # exit status, None when killed
    sig: int = None  # the signal that killed it
    timed_out: bool = False
    out: bytes = b""
    err: bytes = b""
    secs: float = 0.0
    fifo: dict = dataclasses.field(default_factory=dict)  # FIFO path -> bytes read from it
    note: str = ""  # what a driver observed (e.g. the moment of a kill)
    extra: dict = dataclasses.field(default_factory=dict)  # a driver's findings, for check/keep


@dataclasses.dataclass
class Record:
    id: str
    cls: str
    cmd: str
    expect: str
    outcome: str
    status: str  # "exit 1", "signal SIGSEGV", "timeout 8s"
    stderr1: str
    why: str
    secs: float


class Ctx:
    """Paths of the fixtures, shared read-only by every probe."""

    def __init__(self, neox, tmp, testdata, repo):
        self.neox = neox
        self.tmp = tmp
        self.fx = os.path.join(tmp, "fixtures")
        self.testdata = testdata
        self.repo = repo
        self.build = os.path.dirname(os.path.dirname(neox))
        self.is_root = os.geteuid() == 0
        self.env = clean_env()
        self.keep_dirs = False
        self.ref_out = {}  # reference outputs of valid runs, by name


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEOX_")}
    env.update({
        "NEOX_PLUGIN_PATH": "",  # only the build's plugins, as ctest runs
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
    })
    return env


# ---------------------------------------------------------------------------
# Running one command


def signame(n):
    try:
        return signal.Signals(n).name
    except ValueError:
        return "signal %d" % n


def run_cmd(ctx, argv, d, env=None, stdin=None, stdout="pipe", timeout=TIMEOUT, fifo_out=(), wrap=None, fifo_in=None):
    """Runs argv in d; returns a Result. Never blocks past timeout."""
    full_env = dict(ctx.env)
    if env:
        full_env.update(env)
    argv = [str(a) for a in argv]
    shown = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in (env or {}).items())
    shown = (shown + " " if shown else "") + shlex.join((wrap or []) + ["neox" if argv[0] == ctx.neox else argv[0]] +
                                                         argv[1:])
    if stdout == "closed":
        argv = ["/bin/sh", "-c", 'exec "$@" >&-', "sh"] + argv
        shown += " >&-"
    elif stdout == "full":
        shown += " >/dev/full"
    argv = (wrap or []) + argv
    out_target = subprocess.PIPE
    full = None
    if stdout == "full":
        full = open("/dev/full", "wb")
        out_target = full
    elif stdout == "closed":
        out_target = subprocess.DEVNULL  # closed by the shell before exec
    # FIFOs the command writes: opened for reading first (non-blocking, so
    # that the open cannot block), drained by a thread while it runs.
    fifo_fds = {}
    for f in fifo_out:
        fifo_fds[f] = os.open(os.path.join(d, f), os.O_RDONLY | os.O_NONBLOCK)
    fifo_data = {f: bytearray() for f in fifo_out}
    stop = threading.Event()

    def drain():
        while True:
            last = stop.is_set()
            for f, fd in fifo_fds.items():
                try:
                    while True:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        fifo_data[f] += chunk
                except BlockingIOError:
                    pass
            if last:
                return
            time.sleep(0.005)

    drainer = threading.Thread(target=drain, daemon=True) if fifo_fds else None

    def feed(path, data):
        # Opens the FIFO for writing once the command has opened it for
        # reading (a non-blocking open fails with ENXIO until then).
        while not stop.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.005)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, data)
            except OSError:
                pass
            finally:
                os.close(fd)
            return

    feeders = [threading.Thread(target=feed, args=(os.path.join(d, f), data), daemon=True)
               for f, data in (fifo_in or {}).items()]
    r = Result(cmd=shown)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=d, env=full_env, stdin=subprocess.PIPE if stdin is not None else
                                subprocess.DEVNULL, stdout=out_target, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        r.rc, r.err = 127, ("cannot start: %s" % e).encode()
        return r
    if drainer:
        drainer.start()
    for t in feeders:
        t.start()
    try:
        out, err = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        r.timed_out = True
        kill_group(proc)
        out, err = proc.communicate()
    r.secs = time.monotonic() - t0
    stop.set()
    if drainer:
        drainer.join()
    for fd in fifo_fds.values():
        os.close(fd)
    if full:
        full.close()
    r.fifo = {f: bytes(b) for f, b in fifo_data.items()}
    r.out, r.err = out or b"", err or b""
    if proc.returncode < 0:
        r.sig = -proc.returncode
    else:
        r.rc = proc.returncode
    if r.timed_out:
        r.rc = r.sig = None
    return r


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# Classification


def text(b):
    return b.decode("utf-8", "replace")


def first_line(b):
    for line in text(b).splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def error_line(b):
    """The first line that reports an error, else the first line."""
    for line in text(b).splitlines():
        if re.search(r"\b(error|Error|ERROR)\b", line):
            return line.strip()[:200]
    return first_line(b)


def missing_names(p, err):
    """What the message should name but does not."""
    s = text(err)
    missing = []
    for n in p.names:
        alts = n if isinstance(n, tuple) else (n,)
        alts += tuple(a.replace("-", "_") for a in alts if "-" in a)  # --max-new-tokens as max_new_tokens
        if not any(a in s for a in alts):
            missing.append(" or ".join(repr(a) for a in alts))
    return missing


def classify(ctx, p, d, r):
    """Returns (outcome, why)."""
    if r.timed_out:
        return "hang", "still running after %gs" % p.timeout
    if r.sig is not None:
        if p.plugin_crash:
            return "plugin-crash", "%s in the crashing plugin" % signame(r.sig)
        return "crash", "killed by %s" % signame(r.sig)
    lost = p.keep(ctx, d, r) if p.keep else None
    if lost:
        return "silent-wrong", lost
    if r.rc == 0:
        if p.expect == "error":
            return "silent-wrong", "exit 0 where an error was due"
        wrong = p.check(ctx, d, r) if p.check else None
        if wrong:
            return "silent-wrong", wrong
        return "ok", ""
    if p.expect == "ok":
        return "false-error", "exit %d where success was due: %s" % (r.rc, first_line(r.err) or first_line(r.out))
    if not r.err.strip():
        if r.out.strip():
            return "unclear-error", "the error is on stdout, not stderr: " + error_line(r.out)
        return "unclear-error", "exit %d without a message" % r.rc
    if r.out.strip() and not p.stdout_ok:
        return "unclear-error", "stdout not empty on error: " + error_line(r.out)
    missing = missing_names(p, r.err)
    if missing:
        if not missing_names(p, r.out):
            return "unclear-error", "the error is on stdout, not stderr: " + error_line(r.out)
        return "unclear-error", "stderr does not name %s: %s" % (", ".join(missing), error_line(r.err))
    return "clear-error", ""


def status_of(r):
    if r.timed_out:
        return "timeout"
    if r.sig is not None:
        return "signal " + signame(r.sig)
    return "exit %d" % r.rc


def snapshot(d):
    """{relative path: (inode, size, mtime)} of the regular files under d: what the command found there."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            path = os.path.join(root, f)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(path, d)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def written(d, r, rel):
    """True when d/rel is not the file the probe's setup left there (the command wrote it)."""
    try:
        st = os.lstat(os.path.join(d, rel))
    except FileNotFoundError:
        return False
    return r.extra.get("before", {}).get(rel) != (st.st_ino, st.st_size, st.st_mtime_ns)


def run_probe(ctx, p):
    d = os.path.join(ctx.tmp, "probes", re.sub(r"[^A-Za-z0-9_.-]+", "_", p.id))
    os.makedirs(d)
    try:
        if p.setup:
            p.setup(ctx, d)
        before = snapshot(d)
        if p.driver:
            r = p.driver(ctx, p, d)
        else:
            r = run_cmd(ctx, [ctx.neox] + list(p.args), d, env=p.env, stdin=p.stdin, stdout=p.stdout,
                        timeout=p.timeout, fifo_out=p.fifo_out, wrap=p.wrap, fifo_in=p.fifo_in)
        r.extra["before"] = before
        outcome, why = classify(ctx, p, d, r)
        if r.note:
            why = (why + "; " if why else "") + r.note
    except Exception as e:  # a harness bug must not hide the other probes
        import traceback
        traceback.print_exc()
        r = Result(cmd=" ".join(map(str, p.args or [])))
        outcome, why = "harness-error", "%s: %s" % (type(e).__name__, e)
    finally:
        if not ctx.keep_dirs:
            shutil.rmtree(d, ignore_errors=True)
    def tidy(s):  # the report names the temporary directory $TMP, without the log's clock times
        return re.sub(r"\[\d\d:\d\d:\d\d\] ", "", s.replace(ctx.fx, "$FX").replace(ctx.tmp, "$TMP"))

    return Record(id=p.id, cls=p.cls, cmd=tidy(r.cmd), expect=p.expect, outcome=outcome,
                  status=status_of(r) if r.cmd else "-", stderr1=tidy(first_line(r.err)), why=tidy(why),
                  secs=round(r.secs, 2))


# ---------------------------------------------------------------------------
# Files


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)


def copy(src, dst):
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copyfile(src, dst)


def replace_path(path, kind, data=b""):
    """Replaces path by a file holding data, a directory, a FIFO, or nothing."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    if kind == "file":
        write(path, data)
    elif kind == "dir":
        os.makedirs(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "missing":
        pass
    else:
        raise ValueError(kind)


def make_device(path, which):
    """A private character device node: 'null' (1,3) or 'full' (1,7). Root only."""
    minor = {"null": 3, "full": 7}[which]
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))


def is_chardev(path, which):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.minor(st.st_rdev) == {"null": 3, "full": 7}[which]


def device_kept(rel, which="null"):
    """keep(): the device node must still be that device."""

    def keep(ctx, d, r):
        path = os.path.join(d, rel)
        if not is_chardev(path, which):
            kind = "missing" if not os.path.lexists(path) else "a regular file" if os.path.isfile(path) else \
                "a directory" if os.path.isdir(path) else "something else"
            return "%s (a character device) is now %s" % (rel, kind)
        return None

    return keep


def fifo_kept(rel):

    def keep(ctx, d, r):
        try:
            if stat.S_ISFIFO(os.lstat(os.path.join(d, rel)).st_mode):
                return None
        except FileNotFoundError:
            return "%s (a FIFO) was removed" % rel
        return "%s (a FIFO) was replaced by another kind of file" % rel

    return keep


def all_of(*fns):
    """Combines check/keep functions: the first problem found."""
    fns = [f for f in fns if f]

    def combined(ctx, d, r):
        for f in fns:
            problem = f(ctx, d, r)
            if problem:
                return problem
        return None

    return combined


# ---------------------------------------------------------------------------
# safetensors: a JSON header (u64 length first), then the tensors' bytes

ST_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def st_pack(tensors, metadata=None, align=8):
    """tensors: list of (name, dtype, shape, bytes). The header is padded with spaces, as real files are."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    return st_join(json.dumps(header, separators=(",", ":")).encode(), b"".join(blobs), align)


def st_join(header_json, data, align=8):
    header_json += b" " * (-len(header_json) % align)
    return struct.pack("<Q", len(header_json)) + header_json + data


def st_parse(b):
    """(header as an ordered list of (name, entry), metadata, data bytes)."""
    n = struct.unpack("<Q", b[:8])[0]
    pairs = json.loads(b[8:8 + n].decode(), object_pairs_hook=lambda kv: kv)
    meta = None
    entries = []
    for k, v in pairs:
        if k == "__metadata__":
            meta = dict(v)
        else:
            entries.append((k, dict(v)))
    entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
    return entries, meta, b[8 + n:]


def st_tensors(path):
    """name -> (dtype, shape, bytes) of a safetensors file."""
    entries, _, data = st_parse(read(path))
    return {k: (e["dtype"], tuple(e["shape"]), data[e["data_offsets"][0]:e["data_offsets"][1]]) for k, e in entries}


def st_rebuild(entries, meta, data, header_text=None):
    """A file from (possibly edited) entries over the same data bytes."""
    if header_text is None:
        h = {}
        if meta is not None:
            h["__metadata__"] = meta
        for k, e in entries:
            h[k] = e
        header_text = json.dumps(h, separators=(",", ":")).encode()
    return st_join(header_text, data)


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def i64(values):
    return struct.pack("<%dq" % len(values), *values)


def set_f32(data, index, value):
    b = bytearray(data)
    struct.pack_into("<f", b, 4 * index, value)
    return bytes(b)


def tensors_differ(a_path, b_path, names=None):
    """None when the tensors of two safetensors files are bit-identical, else the first difference."""
    try:
        a, b = st_tensors(a_path), st_tensors(b_path)
    except (OSError, ValueError, KeyError, struct.error) as e:
        return "cannot read %s: %s" % (os.path.basename(b_path), e)
    for k in sorted(names or set(a) | set(b)):
        if k not in b:
            return "tensor %s missing" % k
        if k not in a:
            return "unexpected tensor %s" % k
        if a[k] != b[k]:
            return "tensor %s differs from the reference" % k
    return None


# ---------------------------------------------------------------------------
# Megatron indexed datasets (.idx): magic, version, dtype code, counts, arrays

IDX_MAGIC = b"MMIDIDX\x00\x00"


def idx_pack(sizes, pointers, doc_idx, code=8, version=1, magic=IDX_MAGIC, n=None, dcount=None):
    n = len(sizes) if n is None else n
    dcount = len(doc_idx) if dcount is None else dcount
    return (magic + struct.pack("<QBQQ", version, code, n, dcount) + struct.pack("<%di" % len(sizes), *sizes) +
            struct.pack("<%dq" % len(pointers), *pointers) + struct.pack("<%dq" % len(doc_idx), *doc_idx))


def idx_parse(b):
    version, code, n, dcount = struct.unpack_from("<QBQQ", b, 9)
    o = 34
    sizes = list(struct.unpack_from("<%di" % n, b, o))
    pointers = list(struct.unpack_from("<%dq" % n, b, o + 4 * n))
    doc_idx = list(struct.unpack_from("<%dq" % dcount, b, o + 12 * n))
    return code, sizes, pointers, doc_idx


# ---------------------------------------------------------------------------
# TOML: the fixture config is configs/tiny-cpu.toml with values replaced


def toml_set(text, section, key, value):
    """Replaces `key = ...` in [section] of a TOML text (or adds it); value is TOML text."""
    lines = text.split("\n")
    cur, last_in_section, done = None, None, False
    for i, line in enumerate(lines):
        m = re.match(r"\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if m:
            cur = m.group(1).strip()
            if cur == section:
                last_in_section = i
            continue
        if cur == section:
            if line.strip() and not line.strip().startswith("#"):
                last_in_section = i
            m = re.match(r"(\s*)%s\s*=" % re.escape(key), line)
            if m and not done:
                lines[i] = "%s = %s" % (key, value)
                done = True
    if not done:
        if last_in_section is None:
            lines += ["", "[%s]" % section, "%s = %s" % (key, value)]
        else:
            lines.insert(last_in_section + 1, "%s = %s" % (key, value))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Fixtures, made once before the probes


class SetupError(Exception):
    pass


# configs/tiny-cpu.toml shrunk: (section, key, TOML value)
TINY = [
    ("model", "num_layers", "1"),
    ("model", "hidden_size", "32"),
    ("model", "num_attention_heads", "2"),
    ("model", "seq_length", "16"),
    ("model", "max_position_embeddings", "16"),
    ("optimizer", "lr", "1e-2"),
    ("optimizer", "warmup", "0.0"),
    ("training", "train_micro_batch_size_per_gpu", "2"),
    ("training", "train_iters", "6"),
    ("training", "log_interval", "1"),
    ("training", "eval_interval", "1000"),
    ("training", "eval_iters", "1"),
    ("training", "checkpoint_factor", "1"),
    ("training", "save", '"ck"'),
    ("training", "log_dir", '"runs"'),
    ("training", "tensorboard", "false"),
]
# The model of the SIGKILL probes: larger, so that a save takes long enough
# to be caught at its moments (about 10 MB of weights and optimizer state).
KILL = [
    ("model", "num_layers", "4"),
    ("model", "hidden_size", "128"),
    ("model", "num_attention_heads", "4"),
    ("training", "train_iters", "5"),
]
TINY_VOCAB = 257  # the byte tokenizer's
PROMPT = "1,2,3"
PROMPTS_TXT = "hello\nworld wide\n"
WORDS_TXT = "hello world\n"


def fx_run(ctx, args, cwd, what):
    r = run_cmd(ctx, [ctx.neox] + args, cwd, timeout=300)
    if r.rc != 0:
        raise SetupError("%s failed (%s): %s\n%s%s" % (what, status_of(r), r.cmd, text(r.err)[-3000:],
                                                          text(r.out)[-2000:]))
    return r


def words_text(seed, n):
    vocab = ("the model reads tokens and writes weights while a checkpoint keeps every step of training "
             "data flows through layers of attention and the loss falls slowly").split()
    x = seed * 2654435761 % 2**32
    out = []
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(vocab[x % len(vocab)])
    return " ".join(out) + ".\n"


def make_fixtures(ctx, log):
    fx = ctx.fx
    os.makedirs(fx)
    # The config: configs/tiny-cpu.toml with the TINY values, the dataset by absolute path.
    src = os.path.join(ctx.repo, "configs", "tiny-cpu.toml")
    if not os.path.isfile(src):
        raise SetupError("%s not found (run the harness from a neox source tree)" % src)
    base = read(src).decode()
    for section, key, value in TINY:
        base = toml_set(base, section, key, value)
    ctx.data = os.path.join(fx, "data", "t_text_document")
    base = toml_set(base, "plugins.options.mmap", "data_path", json.dumps(ctx.data))
    ctx.tiny_text = base
    ctx.tiny = os.path.join(fx, "tiny.toml")
    write(ctx.tiny, base)
    kill = base
    for section, key, value in KILL:
        kill = toml_set(kill, section, key, value)
    ctx.kill = os.path.join(fx, "kill.toml")
    write(ctx.kill, kill)

    log("fixtures: dataset")
    for i in range(40):
        write(os.path.join(fx, "text", "doc%02d.txt" % i), words_text(i, 40 + 7 * i))
    fx_run(ctx, ["preprocess", "--input", "text", "--output-prefix", "data/t", "--append-eod"], fx, "preprocess")
    fx_run(ctx, ["config", "--check", ctx.tiny], fx, "config --check of the fixture config")

    log("fixtures: reference run (6 steps, a checkpoint per step)")
    ctx.ref = os.path.join(fx, "ref")
    os.makedirs(ctx.ref)
    fx_run(ctx, ["train", ctx.tiny], ctx.ref, "the reference training run")
    ctx.ref_ck = os.path.join(ctx.ref, "ck")
    for k in range(1, 7):
        if not os.path.isfile(os.path.join(ctx.ref_ck, "global_step%d" % k, "model.safetensors")):
            raise SetupError("the reference run did not save global_step%d" % k)
    # The checkpoint the probes corrupt: steps 3 and 4 of the reference run.
    ctx.ck = os.path.join(fx, "ck")
    for k in (3, 4):
        copy(os.path.join(ctx.ref_ck, "global_step%d" % k), os.path.join(ctx.ck, "global_step%d" % k))
    write(os.path.join(ctx.ck, "latest"), "global_step4\n")
    for k in (3, 4, 6):
        r = fx_run(ctx, ["generate", "--model", os.path.join(ctx.ref_ck, "global_step%d" % k), "--prompt-ids", PROMPT,
                         "--greedy", "--max-new-tokens", "8"], fx, "generate from the reference run")
        ctx.ref_out["gen%d" % k] = r.out
        fx_run(ctx, ["convert", "--to-hf", os.path.join(ctx.ref_ck, "global_step%d" % k), "--out",
                     os.path.join(fx, "hf_step%d" % k)], fx, "convert --to-hf of the reference run")

    log("fixtures: Hugging Face model, tokens, tokenizers")
    ctx.hf = os.path.join(fx, "hf")
    tiny_hf = os.path.join(ctx.testdata or "", "hf", "neox_tiny_parallel", "hf")
    if ctx.testdata and os.path.isdir(tiny_hf):
        os.makedirs(ctx.hf)
        for name in os.listdir(tiny_hf):
            shutil.copyfile(os.path.join(tiny_hf, name), os.path.join(ctx.hf, name))
    else:
        copy(os.path.join(fx, "hf_step6"), ctx.hf)
    for root, dirs, files in os.walk(fx):
        for n in dirs + files:
            os.chmod(os.path.join(root, n), 0o755 if n in dirs else 0o644)
    hf_config = json.loads(read(os.path.join(ctx.hf, "config.json")))
    ctx.hf_config = hf_config
    ctx.hf_vocab = hf_config["vocab_size"]
    ctx.hf_positions = hf_config.get("max_position_embeddings", 16)
    ids = [(7 * i + 3) % min(ctx.hf_vocab, 250) for i in range(16)]
    ctx.tokens_list = [("input_ids", "I64", [2, 8], i64(ids)), ("labels", "I64", [2, 8], i64(ids[1:] + [5]))]
    ctx.tokens = os.path.join(fx, "tokens.safetensors")
    write(ctx.tokens, st_pack(ctx.tokens_list))
    r = fx_run(ctx, ["score", "--model", ctx.hf, "--tokens", ctx.tokens, "--out", os.path.join(fx, "score.safetensors")],
               fx, "score of the Hugging Face model")
    ctx.ref_out["score"] = r.out
    r = fx_run(ctx, ["generate", "--model", ctx.hf, "--prompt-ids", PROMPT, "--greedy", "--max-new-tokens", "4"], fx,
               "generate from the Hugging Face model")
    ctx.ref_out["gen_hf"] = r.out
    fx_run(ctx, ["convert", "--from-hf", ctx.hf, "--out", os.path.join(fx, "hf_import")], fx, "convert --from-hf")

    # Outputs that probes write elsewhere (devices, FIFOs), made here as regular files.
    write(os.path.join(fx, "prompts.txt"), PROMPTS_TXT)
    write(os.path.join(fx, "words.txt"), WORDS_TXT)
    fx_run(ctx, ["generate", "--model", ctx.ck, "--input", "prompts.txt", "--output", "prompts.jsonl", "--greedy",
                 "--max-new-tokens", "3"], fx, "generate --input")
    fx_run(ctx, ["tokenize", "--tokenizer-type", "byte", "--text", "hello world", "--output", "tok.txt"], fx,
           "tokenize --output")
    ctx.ref_out["tok_byte"] = fx_run(ctx, ["tokenize", "--tokenizer-type", "byte", "--text", "hello world"], fx,
                                     "tokenize").out
    ctx.ref_out["tok_input"] = fx_run(ctx, ["tokenize", "--tokenizer-type", "byte", "--input", "words.txt"], fx,
                                      "tokenize --input").out
    ctx.ref_out["gen_input"] = read(os.path.join(fx, "prompts.jsonl"))

    ctx.tok_json = ctx.gpt2_vocab = ctx.gpt2_merges = None
    tokdir = os.path.join(ctx.testdata or "", "tokenizers")
    if ctx.testdata and os.path.isfile(os.path.join(tokdir, "bpe_bytelevel_1k.json")):
        ctx.tok_json = os.path.join(fx, "tok", "tokenizer.json")
        copy(os.path.join(tokdir, "bpe_bytelevel_1k.json"), ctx.tok_json)
        r = fx_run(ctx, ["tokenize", "--tokenizer-type", "HFTokenizer", "--vocab-file", ctx.tok_json, "--text",
                         "hello world"], fx, "tokenize with tokenizer.json")
        ctx.ref_out["tok_hf"] = r.out
    if ctx.testdata and os.path.isfile(os.path.join(tokdir, "gpt2_format_1k", "vocab.json")):
        ctx.gpt2_vocab = os.path.join(fx, "tok", "vocab.json")
        ctx.gpt2_merges = os.path.join(fx, "tok", "merges.txt")
        copy(os.path.join(tokdir, "gpt2_format_1k", "vocab.json"), ctx.gpt2_vocab)
        copy(os.path.join(tokdir, "gpt2_format_1k", "merges.txt"), ctx.gpt2_merges)
        r = fx_run(ctx, ["tokenize", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", ctx.gpt2_vocab,
                         "--merge-file", ctx.gpt2_merges, "--text", "hello world"], fx, "tokenize with vocab.json")
        ctx.ref_out["tok_gpt2"] = r.out

    # Plugins: the build's, the broken ones of tests/plugins, two that crash.
    ctx.plugin_dir = os.path.join(ctx.build, "plugins")
    ctx.test_plugin_dir = os.path.join(ctx.build, "tests", "plugins")
    if not os.path.isdir(ctx.test_plugin_dir):
        ctx.test_plugin_dir = None
    ctx.crash_plugins = make_crash_plugins(ctx)

    log("fixtures: reference run of the SIGKILL probes")
    ctx.kref = os.path.join(fx, "kref")
    os.makedirs(ctx.kref)
    fx_run(ctx, ["train", ctx.kill], ctx.kref, "the reference run of the SIGKILL probes")
    ctx.kref_ck = os.path.join(ctx.kref, "ck")


CRASH_PLUGIN_C = {
    # The entry symbol dereferences a null pointer: the plugin crashes in its own code.
    "neox_comm_crash-entry.so": """
        void* neox_plugin_entry(void) { volatile int* p = 0; *p = 1; return 0; }
    """,
    # A constructor that runs at dlopen and crashes.
    "neox_comm_crash-ctor.so": """
        #include <signal.h>
        __attribute__((constructor)) static void boom(void) { raise(SIGSEGV); }
        void* neox_plugin_entry(void) { return 0; }
    """,
}


def make_crash_plugins(ctx):
    """{file name: path} of the deliberately crashing plugins; empty without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    out = {}
    if not cc:
        return out
    d = os.path.join(ctx.fx, "crash-plugins")
    os.makedirs(d)
    for name, src in CRASH_PLUGIN_C.items():
        c = os.path.join(d, name + ".c")
        write(c, src)
        sub = os.path.join(d, name[:-3])
        os.makedirs(sub)
        so = os.path.join(sub, name)
        if subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", so, c], capture_output=True).returncode == 0:
            out[name] = so
    return out


# ---------------------------------------------------------------------------
# Building blocks of probes: setups (make files in the probe's directory d),
# checks (after exit 0: None or what is wrong) and keeps (whatever the exit:
# None or what was lost).


def s_chain(*fns):
    fns = [f for f in fns if f]

    def setup(ctx, d):
        for f in fns:
            f(ctx, d)

    return setup


def s_copy(src_attr_or_path, rel):
    """Copies a fixture (a Ctx attribute name or a path) to d/rel."""

    def setup(ctx, d):
        src = getattr(ctx, src_attr_or_path) if hasattr(ctx, src_attr_or_path) else src_attr_or_path
        copy(src, os.path.join(d, rel))

    return setup


def s_write(rel, data):

    def setup(ctx, d):
        write(os.path.join(d, rel), data(ctx) if callable(data) else data)

    return setup


def s_node(rel, kind):
    """d/rel becomes: fifo, dir, missing, devnull, devfull (private devices, root only), or a file."""

    def setup(ctx, d):
        path = os.path.join(d, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind in ("devnull", "devfull"):
            if os.path.lexists(path):
                replace_path(path, "missing")
            make_device(path, kind[3:])
        else:
            replace_path(path, kind, b"")

    return setup


def s_edit(rel, fn):
    """d/rel's bytes become fn(bytes)."""

    def setup(ctx, d):
        path = os.path.join(d, rel)
        write(path, fn(read(path)))

    return setup


def s_json(rel, fn):
    """Edits a JSON file: fn(obj) changes it in place or returns a replacement (bytes: written as is)."""

    def setup(ctx, d):
        path = os.path.join(d, rel)
        obj = json.loads(read(path))
        new = fn(obj)
        if isinstance(new, bytes):
            write(path, new)
        else:
            write(path, json.dumps(obj if new is None else new, indent=2))

    return setup


def s_hf(*more):
    """The Hugging Face model in d/hf and the token file of neox score in d/tokens.safetensors."""
    return s_chain(s_copy("hf", "hf"), s_copy("tokens", "tokens.safetensors"), *more)


def c_stdout(key):
    """exit 0: stdout must equal the reference output `key`."""

    def check(ctx, d, r):
        if r.out != ctx.ref_out[key]:
            return "stdout %r differs from the reference %r" % (r.out[:80], ctx.ref_out[key][:80])
        return None

    return check


def c_stdout_in(*keys):

    def check(ctx, d, r):
        if r.out not in [ctx.ref_out[k] for k in keys]:
            return "stdout %r is none of the expected outputs (%s)" % (r.out[:80], ", ".join(keys))
        return None

    return check


def c_same_file(rel, ref):
    """exit 0: d/rel must hold the same bytes as the fixture ref (a path or a function of ctx)."""

    def check(ctx, d, r):
        path = os.path.join(d, rel)
        want = ref(ctx) if callable(ref) else ref
        if not os.path.isfile(path):
            return "%s was not written" % rel
        if read(path) != read(want):
            return "%s differs from the reference output" % rel
        return None

    return check


def c_tensors(rel, ref):
    """exit 0: the tensors of d/rel must equal those of ref (a path or function of ctx)."""

    def check(ctx, d, r):
        path = os.path.join(d, rel)
        if not os.path.isfile(path):
            return "%s was not written" % rel
        diff = tensors_differ(ref(ctx) if callable(ref) else ref, path)
        return "%s: %s" % (rel, diff) if diff else None

    return check


def c_ckpt(rel_dir, step, ref="ref_ck"):
    """exit 0: d/rel_dir/global_step<step> must equal the reference run's (weights and optimizer state)."""

    def check(ctx, d, r):
        mine = os.path.join(d, rel_dir, "global_step%d" % step)
        theirs = os.path.join(getattr(ctx, ref), "global_step%d" % step)
        for f in ("model.safetensors", "optimizer.safetensors"):
            if not os.path.isfile(os.path.join(mine, f)):
                return "%s/global_step%d/%s missing after exit 0" % (rel_dir, step, f)
            diff = tensors_differ(os.path.join(theirs, f), os.path.join(mine, f))
            if diff:
                return "%s/global_step%d/%s: %s (uninterrupted run)" % (rel_dir, step, f, diff)
        return None

    return check


def c_stderr_names(*names):
    """exit 0: a warning must name each (a fall-back must say why). On stdout it is misplaced but not
    silent, so it counts here; the output class measures where messages go."""

    def check(ctx, d, r):
        s = text(r.err + r.out)
        for n in names:
            alts = n if isinstance(n, tuple) else (n,)
            if not any(a in s for a in alts):
                return "exit 0 without a warning naming %s" % " or ".join(map(repr, alts))
        return None

    return check


def k_same(rel, ref):
    """keep: d/rel still holds the bytes of ref (a fixture path or function of ctx)."""

    def keep(ctx, d, r):
        path = os.path.join(d, rel)
        want = ref(ctx) if callable(ref) else ref
        if not os.path.isfile(path) or read(path) != read(want):
            return "%s was changed or removed" % rel
        return None

    return keep


def k_tree(rel, ref):
    """keep: every file of the fixture tree ref is still in d/rel with its bytes."""

    def keep(ctx, d, r):
        base = ref(ctx) if callable(ref) else getattr(ctx, ref, ref)
        for root, _, files in os.walk(base):
            for f in files:
                src = os.path.join(root, f)
                rp = os.path.relpath(src, base)
                dst = os.path.join(d, rel, rp)
                if not os.path.isfile(dst) or read(dst) != read(src):
                    return "%s/%s was changed or removed" % (rel, rp)
        return None

    return keep


def train(ctx, *sets, config=None):
    """neox train on the fixture config (or config), with --set overrides."""
    args = ["train", config or ctx.tiny]
    for s in sets:
        args += ["--set", s]
    return args


def gen_ck(model="ck", **opts):
    """neox generate of 8 greedy tokens; opts ("max_new_tokens": "5") replace or add options, None drops one."""
    o = {"model": model, "prompt_ids": PROMPT, "greedy": "", "max_new_tokens": "8"}
    o.update(opts)
    args = ["generate"]
    for k, v in o.items():
        if v is not None:
            args += ["--" + k.replace("_", "-")] + ([v] if v != "" else [])
    return args


def gen_hf(model="hf", **opts):
    return gen_ck(model, **dict({"max_new_tokens": "4"}, **opts))


def score(model="hf", tokens="tokens.safetensors", out="out.safetensors"):
    return ["score", "--model", model, "--tokens", tokens, "--out", out]


STDOUT_NAMES = ("standard output", "stdout")


# ---------------------------------------------------------------------------
# class issue: the items of issue 17 that fit no other class


def probes_issue(ctx):
    P = []
    add = P.append
    tiny = lambda ctx, d: copy(ctx.tiny, os.path.join(d, "A.toml"))
    add(Probe("issue/train-without-config", "issue", ["train"], names=(("config", "CONFIG"),),
              what="neox train with no config: an error saying what is missing, not the help on stdout"))
    add(Probe("issue/train-A.toml-A.toml", "issue", ["train", "A.toml", "A.toml", "--set", "training.train_iters=1"],
              setup=tiny, names=("A.toml",), what="the second config must not be ignored"))
    add(Probe("issue/train-A.toml-B.toml", "issue", ["train", "A.toml", "B.toml", "--set", "training.train_iters=1"],
              setup=s_chain(tiny, lambda ctx, d: copy(ctx.tiny, os.path.join(d, "B.toml"))), names=("B.toml",)))
    add(Probe("issue/config-check-A.toml-B.toml", "issue", ["config", "--check", "A.toml", "B.toml"],
              setup=s_chain(tiny, lambda ctx, d: copy(ctx.tiny, os.path.join(d, "B.toml"))), names=("B.toml",)))

    # score with every label ignored: nothing to score (PyTorch gives nan), never "loss 0".
    def labels(value_fn):

        def setup(ctx, d):
            (n1, t1, s1, b1), (n2, t2, s2, _) = ctx.tokens_list
            ids = struct.unpack("<16q", b1)
            write(os.path.join(d, "tokens.safetensors"), st_pack([(n1, t1, s1, b1),
                                                                   (n2, t2, s2, i64([value_fn(i, x)
                                                                                     for i, x in enumerate(ids)]))]))

        return setup

    def nothing_scored(ctx, d, r):
        if re.search(rb"^loss\s+[-+0-9.eE]+\s*$", r.out, re.M):
            return "printed %r for a batch with every label ignored" % first_line(r.out)
        if b"label" not in r.out + r.err:
            return "exit 0 without saying that every label is ignored"
        return None

    for name, fn in [("all-minus-100", lambda i, x: -100), ("all-minus-1", lambda i, x: -1),
                     ("all-min-int64", lambda i, x: -2**63)]:
        add(Probe("issue/score-labels-%s" % name, "issue", score(), expect="either", names=("labels",),
                  setup=s_chain(s_copy("hf", "hf"), labels(fn)), check=nothing_scored,
                  what="score with every label ignored: say there is nothing to score"))
    add(Probe("issue/score-labels-one-kept", "issue", score(), expect="ok",
              setup=s_chain(s_copy("hf", "hf"), labels(lambda i, x: 5 if i == 3 else -100)),
              check=lambda ctx, d, r: None if re.search(rb"^loss\s+[0-9.]+", r.out, re.M) else "no loss line",
              what="control: one label kept gives a loss"))

    # Unknown tokenizer types: an error naming the type.
    add(Probe("issue/data-inspect-tokenizer-type-Foo", "issue",
              ["data", "inspect", ctx.data, "--tokenizer-type", "Foo"], names=("Foo",)))
    add(Probe("issue/tokenize-tokenizer-type-Foo", "issue", ["tokenize", "--tokenizer-type", "Foo", "--text", "hi"],
              names=("Foo",)))
    add(Probe("issue/preprocess-tokenizer-type-Foo", "issue",
              ["preprocess", "--input", "a.txt", "--output-prefix", "o", "--tokenizer-type", "Foo"],
              setup=s_write("a.txt", "hello\n"), names=("Foo",)))
    add(Probe("issue/generate-tokenizer-Foo", "issue", gen_ck() + ["--tokenizer", "Foo"], setup=s_copy("ck", "ck"),
              names=("Foo",)))
    add(Probe("issue/train-tokenizer-type-Foo", "issue", train(ctx, "tokenizer.type=Foo", "training.train_iters=1"),
              names=("Foo",)))

    # Huge integers.
    def hf_key(key, value):
        return s_hf(s_json("hf/config.json", lambda j: j.__setitem__(key, value)))

    add(Probe("issue/hf-eos_token_id-4294967328:generate", "issue", gen_hf(), setup=hf_key("eos_token_id", 4294967328),
              names=("eos_token_id",), what="eos_token_id beyond 32 bits must not be truncated"))
    add(Probe("issue/hf-num_hidden_layers-1e9:generate", "issue", gen_hf(),
              setup=hf_key("num_hidden_layers", 1000000000), names=("num_hidden_layers",)))
    add(Probe("issue/hf-num_hidden_layers-1e9:score", "issue", score(), setup=hf_key("num_hidden_layers", 1000000000),
              names=("num_hidden_layers",)))
    add(Probe("issue/train-eval_iters-1e12", "issue", train(ctx, "training.eval_iters=1000000000000",
                                                            "training.train_iters=1"), names=("eval_iters",),
              what="eval_iters 1e12: an error naming eval_iters, not bad_alloc"))

    def few_ids(ctx, d, r):
        ids = [x for x in re.split(rb"[,\s]+", r.out.strip()) if x]
        return None if 0 < len(ids) <= 16 else "printed %d ids for a 16-position model" % len(ids)

    for opt, value, expect, check in [
        ("--max-new-tokens", "9223372036854775807", "either", few_ids),
        ("--max-new-tokens", "18446744073709551616", "error", None),
        ("--max-new-tokens", "-1", "error", None),
        ("--num-samples", "1000000000", "error", None),
        ("--num-samples", "9223372036854775807", "error", None),
        ("--eod-id", "4294967328", "error", None),
        ("--seed", "18446744073709551616", "error", None),
        ("--top-k", "9223372036854775807", "either", few_ids),
        ("--max-length", "9223372036854775807", "either", few_ids),
        ("--temperature", "1e400", "error", None),
        ("--top-p", "nan", "error", None),
    ]:
        add(Probe("issue/generate%s=%s" % (opt, value), "issue", gen_ck(**{opt[2:].replace("-", "_"): value}),
                  setup=s_copy("ck", "ck"),
                  expect=expect, check=check, names=(opt[2:],), timeout=30))
    for opt, value, expect in [("--document", "9223372036854775807", "error"), ("--document", "-1", "error"),
                               ("--max-tokens", "9223372036854775807", "either"), ("--max-tokens", "-5", "error")]:
        add(Probe("issue/data-inspect%s=%s" % (opt, value), "issue", ["data", "inspect", ctx.data, opt, value],
                  expect=expect, names=(opt[2:],)))
    add(Probe("issue/tokenize--threads=4294967296", "issue",
              ["tokenize", "--tokenizer-type", "byte", "--text", "hi", "--threads", "4294967296"],
              expect="either", names=("threads",)))
    add(Probe("issue/preprocess--workers=1000000000", "issue",
              ["preprocess", "--input", "a.txt", "--output-prefix", "o", "--workers", "1000000000"],
              setup=s_write("a.txt", "hello\n"), expect="either", names=("workers",), timeout=30))
    add(Probe("issue/bench-op--size=1e9", "issue",
              ["bench", "op", "gelu_forward", "--a", "cpu", "--b", "cpu", "--size", "1e9", "--runs", "1"],
              names=("size",), timeout=30))
    return P


# ---------------------------------------------------------------------------
# class output: outputs onto character devices and FIFOs; stdout on
# /dev/full or closed. Atomic rename is for regular files and new paths only.


def c_fifo(rel, ref):
    """exit 0: what came through the FIFO must equal the reference (bytes, a path, or ctx -> bytes)."""

    def check(ctx, d, r):
        want = ref(ctx) if callable(ref) else ref
        if isinstance(want, str):
            want = read(want)
        got = r.fifo.get(rel, b"")
        if got != want:
            return "%d bytes came through the FIFO %s, expected the %d of a regular-file run" % (len(got), rel,
                                                                                                 len(want))
        return None

    return check


def d_lost_stdout(ctx, p, d):
    """Runs the command with stdout on a pipe (the control), then as the probe says.

    A run with stdout on /dev/full or closed may exit 0 only when the control
    printed nothing on stdout: otherwise its output was lost."""
    ctl_dir = os.path.join(d, "control")
    os.makedirs(ctl_dir)
    if p.setup:
        p.setup(ctx, ctl_dir)
    ctl = run_cmd(ctx, [ctx.neox] + list(p.args), ctl_dir, env=p.env, timeout=p.timeout)
    r = run_cmd(ctx, [ctx.neox] + list(p.args), d, env=p.env, stdout=p.stdout, timeout=p.timeout)
    r.extra["control_out"] = ctl.out
    r.extra["mode"] = p.stdout
    return r


def c_lost_stdout(ctx, d, r):
    n = len(r.extra.get("control_out", b""))
    if n:
        return "exit 0 with stdout %s: the %d bytes it prints were lost" % (
            "closed" if r.extra.get("mode") == "closed" else "on /dev/full", n)
    return None


def probes_output(ctx):
    P = []
    add = P.append
    ck, hf = s_copy("ck", "ck"), s_hf()
    prompts = s_write("prompts.txt", PROMPTS_TXT)
    # Commands that write a file: (name, args with OUT, setup, reference output path)
    file_outputs = [
        ("score--out", lambda o: score(out=o), hf, lambda ctx: os.path.join(ctx.fx, "score.safetensors")),
        ("generate--output", lambda o: ["generate", "--model", "ck", "--input", "prompts.txt", "--output", o,
                                        "--greedy", "--max-new-tokens", "3"], s_chain(ck, prompts),
         lambda ctx: os.path.join(ctx.fx, "prompts.jsonl")),
        ("tokenize--output", lambda o: ["tokenize", "--tokenizer-type", "byte", "--text", "hello world", "--output", o],
         None, lambda ctx: os.path.join(ctx.fx, "tok.txt")),
    ]
    for name, args, setup, ref in file_outputs:
        if ctx.is_root:
            add(Probe("output/%s=devnull" % name, "output", args("null"), expect="ok",
                      setup=s_chain(setup, s_node("null", "devnull")), keep=device_kept("null"),
                      what="a character device as the output: written straight, never replaced"))
            add(Probe("output/%s=devfull" % name, "output", args("full"), setup=s_chain(setup, s_node("full", "devfull")),
                      names=("full",), keep=device_kept("full", "full"), what="ENOSPC from a device: an error naming it"))
        add(Probe("output/%s=fifo" % name, "output", args("fifo"), expect="ok",
                  setup=s_chain(setup, s_node("fifo", "fifo")), fifo_out=("fifo",), keep=fifo_kept("fifo"),
                  check=c_fifo("fifo", ref), timeout=TIMEOUT_BLOCKING, what="a FIFO as the output: written into it"))
        add(Probe("output/%s=existing-file" % name, "output", args("old.out"), expect="ok",
                  setup=s_chain(setup, s_write("old.out", "old contents\n")), check=c_same_file("old.out", ref),
                  what="control: an existing regular file is replaced"))
        add(Probe("output/%s=missing-dir" % name, "output", args("nodir/out"), setup=setup, names=("nodir",)))
        add(Probe("output/%s=directory" % name, "output", args("adir"), setup=s_chain(setup, s_node("adir", "dir")),
                  names=("adir",), keep=lambda ctx, d, r: None if os.path.isdir(os.path.join(d, "adir")) else
                  "the directory adir was removed"))
    # Commands that write a directory: a device, a FIFO or a file there is an error, and stays.
    dir_outputs = [
        ("convert--to-hf--out", lambda o: ["convert", "--to-hf", "ck", "--out", o], ck),
        ("convert--from-hf--out", lambda o: ["convert", "--from-hf", "hf", "--out", o], hf),
        ("train-save", lambda o: train(ctx, "training.save=%s" % o, "training.train_iters=1"), None),
        ("train-log_dir", lambda o: train(ctx, "training.log_dir=%s" % o, "training.train_iters=1"), None),
    ]
    for name, args, setup in dir_outputs:
        if ctx.is_root:
            add(Probe("output/%s=devnull" % name, "output", args("null"), setup=s_chain(setup, s_node("null", "devnull")),
                      names=("null",), keep=device_kept("null")))
        add(Probe("output/%s=fifo" % name, "output", args("fifo"), setup=s_chain(setup, s_node("fifo", "fifo")),
                  names=("fifo",), keep=fifo_kept("fifo"), timeout=TIMEOUT_BLOCKING))
        add(Probe("output/%s=file" % name, "output", args("afile"), setup=s_chain(setup, s_write("afile", "keep me\n")),
                  names=("afile",), keep=lambda ctx, d, r: None if os.path.isfile(os.path.join(d, "afile")) and read(
                      os.path.join(d, "afile")) == b"keep me\n" else "the file afile was changed or removed"))
    # Prefix outputs (.bin/.idx): a device there is written or refused, never replaced.
    if ctx.is_root:
        add(Probe("output/data-merge-bin=devnull", "output",
                  ["data", "merge", "--input", "%s,%s" % (ctx.data, ctx.data), "--output-prefix", "q"], expect="either",
                  setup=s_node("q.bin", "devnull"), names=("q.bin",), keep=device_kept("q.bin")))
        add(Probe("output/preprocess-bin=devnull", "output",
                  ["preprocess", "--input", "a.txt", "--output-prefix", "p"], expect="either",
                  setup=s_chain(s_write("a.txt", "hello\n"), s_node("p_text_document.bin", "devnull")),
                  names=("p_text_document.bin",), keep=device_kept("p_text_document.bin")))

    # stdout on /dev/full or closed: an error naming standard output, never exit 0 with the output lost.
    stdout_cmds = [
        ("generate--prompt-ids", gen_ck(), ck, None),
        ("generate--prompt", gen_ck(prompt_ids=None, prompt="hello"), ck, None),
        ("data-inspect", ["data", "inspect", ctx.data], None, None),
        ("config--reference", ["config", "--reference"], None, None),
        ("config--check", ["config", "--check", ctx.tiny], None, None),
        ("plugins", ["plugins"], None, None),
        ("plugins--check", ["plugins", "--check", os.path.join(ctx.plugin_dir, "neox_comm_local.so")], None, None),
        ("tokenize--text", ["tokenize", "--tokenizer-type", "byte", "--text", "hello world"], None, None),
        ("tokenize--decode", ["tokenize", "--tokenizer-type", "byte", "--decode", "--ids", "104 105"], None, None),
        ("score", score(), hf, c_same_file("out.safetensors", lambda ctx: os.path.join(ctx.fx, "score.safetensors"))),
        ("convert--to-hf", ["convert", "--to-hf", "ck", "--out", "o"], ck,
         c_tensors("o/model.safetensors", lambda ctx: os.path.join(ctx.fx, "hf_step4", "model.safetensors"))),
        ("preprocess", ["preprocess", "--input", "a.txt", "--output-prefix", "p"], s_write("a.txt", "hello\n"), None),
        ("data-merge", ["data", "merge", "--input", "%s,%s" % (ctx.data, ctx.data), "--output-prefix", "q"], None,
         None),
        ("bench-op", ["bench", "op", "gelu_forward", "--a", "cpu", "--b", "cpu", "--size", "0.01", "--runs", "1",
                      "--warmup", "0"], None, None),
        ("bench-train", ["bench", "train", "--config", ctx.tiny, "--steps", "1", "--warmup", "0"], None, None),
        ("train", train(ctx), None, c_ckpt("ck", 6)),
        ("help", ["--help"], None, None),
        ("tokenize--help", ["tokenize", "--help"], None, None),
    ]
    for name, args, setup, outputs_ok in stdout_cmds:
        for mode in ("full", "closed"):
            # Files the command writes must be right whatever the exit status
            # (with fd 1 closed, a file opened later could become fd 1).
            keep = None
            if outputs_ok:
                keep = lambda ctx, d, r, f=outputs_ok: f(ctx, d, r) if r.rc == 0 else None
            add(Probe("output/stdout-%s:%s" % (mode, name), "output", args, expect="either", setup=setup,
                      stdout=mode, names=(STDOUT_NAMES,), driver=d_lost_stdout, check=c_lost_stdout, keep=keep,
                      what="stdout %s: an error naming standard output" % ("on /dev/full" if mode == "full" else
                                                                           "closed")))
    return P


# ---------------------------------------------------------------------------
# class fifo: a FIFO, a directory or nothing where an input file is
# expected. Files are refused before they are opened, naming the path.


def probes_fifo(ctx):
    P = []
    ck, hf = s_copy("ck", "ck"), s_hf()
    conf = s_copy("tiny", "c.toml")
    ds = lambda ctx, d: [copy(ctx.data + ext, os.path.join(d, "ds", "t" + ext)) for ext in (".idx", ".bin")]
    tok = s_copy("tok_json", "tok.json") if ctx.tok_json else None
    # (input, setup, path replaced, [(consumer, args)])
    inputs = [
        ("config-toml", conf, "c.toml", [
            ("config-check", ["config", "--check", "c.toml"], None),
            ("train", ["train", "c.toml", "--set", "training.train_iters=1"], None),
            ("bench-train", ["bench", "train", "--config", "c.toml", "--steps", "1", "--warmup", "0"], None),
            ("generate", gen_ck(config="c.toml"), ck),
            ("score", score() + ["--config", "c.toml"], hf),
            ("convert", ["convert", "--to-hf", "ck", "--out", "o", "--config", "c.toml"], ck),
        ]),
        ("hf-model.safetensors", hf, "hf/model.safetensors", [
            ("score", score(), None),
            ("generate", gen_hf(), None),
            ("convert-from-hf", ["convert", "--from-hf", "hf", "--out", "o"], None),
        ]),
        ("hf-config.json", hf, "hf/config.json", [
            ("score", score(), None),
            ("generate", gen_hf(), None),
            ("convert-from-hf", ["convert", "--from-hf", "hf", "--out", "o"], None),
        ]),
        ("tokens.safetensors", hf, "tokens.safetensors", [("score", score(), None)]),
    ]
    for ext in (".idx", ".bin"):
        inputs.append(("dataset" + ext, ds, "ds/t" + ext, [
            ("data-inspect", ["data", "inspect", "ds/t"], None),
            ("train", train(ctx, "plugins.options.mmap.data_path=ds/t", "training.train_iters=1"), None),
            ("data-merge", ["data", "merge", "--input", "ds/t", "--output-prefix", "m"], None),
        ]))
    if ctx.tok_json:
        inputs.append(("tokenizer.json", tok, "tok.json", [
            ("tokenize", ["tokenize", "--tokenizer-type", "HFTokenizer", "--vocab-file", "tok.json", "--text", "hi"],
             None),
            ("preprocess", ["preprocess", "--input", "a.txt", "--output-prefix", "p", "--tokenizer-type", "HFTokenizer",
                            "--vocab-file", "tok.json"], s_write("a.txt", "hello\n")),
            ("generate", gen_hf(prompt_ids=None, prompt="hi", tokenizer="tok.json"), hf),
            ("train", train(ctx, "tokenizer.type=HFTokenizer", "tokenizer.vocab_file=tok.json",
                            "training.train_iters=1"), None),
        ]))
    if ctx.gpt2_vocab:
        gpt2 = s_chain(s_copy("gpt2_vocab", "vocab.json"), s_copy("gpt2_merges", "merges.txt"))
        args = ["tokenize", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", "vocab.json", "--merge-file",
                "merges.txt", "--text", "hi"]
        inputs.append(("vocab.json", gpt2, "vocab.json", [("tokenize", args, None)]))
        inputs.append(("merges.txt", gpt2, "merges.txt", [("tokenize", args, None)]))
    for inp, setup, rel, consumers in inputs:
        for kind in ("fifo", "dir", "missing"):
            for cname, args, extra in consumers:
                P.append(Probe("fifo/%s=%s:%s" % (inp, kind, cname), "fifo", args, setup=s_chain(setup, extra,
                                                                                                  s_node(rel, kind)),
                               names=(os.path.basename(rel),), timeout=TIMEOUT_BLOCKING if kind == "fifo" else
                               TIMEOUT,
                               what="%s where %s is expected" % ({"fifo": "a FIFO", "dir": "a directory",
                                                                   "missing": "nothing"}[kind], rel)))
    # Text inputs may be FIFOs (process substitution): read to the end, or refused.
    streams = [
        ("tokenize--input", ["tokenize", "--tokenizer-type", "byte", "--input", "in"], WORDS_TXT, None,
         c_stdout("tok_input")),
        ("generate--input", ["generate", "--model", "ck", "--input", "in", "--output", "o.jsonl", "--greedy",
                             "--max-new-tokens", "3"], PROMPTS_TXT, ck,
         c_same_file("o.jsonl", lambda ctx: os.path.join(ctx.fx, "prompts.jsonl"))),
        ("preprocess--input", ["preprocess", "--input", "in", "--output-prefix", "p"], WORDS_TXT, None,
         lambda ctx, d, r: None if os.path.isfile(os.path.join(d, "p_text_document.bin")) else "no dataset written"),
    ]
    for name, args, content, setup, check in streams:
        P.append(Probe("fifo/stream:%s" % name, "fifo", args, expect="either", setup=s_chain(setup, s_node("in", "fifo")),
                       fifo_in={"in": content.encode()}, names=("in",), check=check, timeout=TIMEOUT_BLOCKING,
                       what="a FIFO with a writer as a text input: read to the end, or refused"))
    # Directories where a file is expected, beyond the inputs above (issue 17).
    for name, args, setup, rel in [
        ("config-check", ["config", "--check", "adir"], None, "adir"),
        ("generate--input", gen_ck(prompt_ids=None, input="adir"), ck, "adir"),
        ("tokenize--input", ["tokenize", "--tokenizer-type", "byte", "--input", "adir"], None, "adir"),
        ("plugins--check", ["plugins", "--check", "adir"], None, "adir"),
        ("generate--tokenizer", gen_ck(tokenizer="adir"), ck, "adir"),
        ("score--tokens", score(tokens="adir"), hf, "adir"),
    ]:
        P.append(Probe("fifo/dir-as-file:%s" % name, "fifo", args, setup=s_chain(setup, s_node(rel, "dir")),
                       names=(rel,), what="a directory where a file is expected"))
    return P


# ---------------------------------------------------------------------------
# class plugin: bad files on the plugin path. A bad file must not break a
# command that does not need it; it is rejected with a reason; a plugin that
# crashes in its own code is the one thing no in-process loader survives.


def elf_patch(offset, fmt, value):
    def fn(b):
        b = bytearray(b)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    return fn


OWN_CODE_CRASH = {"middle-zeroed"}


def bad_plugin_files(ctx):
    """(label, file name on the plugin path, maker(ctx, path)); a maker may make a FIFO, a directory, a link."""
    local = os.path.join(ctx.plugin_dir, "neox_comm_local.so")
    size = os.path.getsize(local)

    def from_local(fn):
        return lambda ctx, path: write(path, fn(read(local)))

    files = []
    for n in [0, 16, 63, 64, 500, 4096, size // 4, size // 2, 3 * size // 4, size - 4096, size - 1]:
        files.append(("truncated-%d" % n, "neox_comm_trunc.so", from_local(lambda b, n=n: b[:n])))
    files += [
        ("text", "neox_comm_text.so", lambda ctx, path: write(path, "this is not a shared library\n")),
        ("linker-script", "neox_comm_script.so", lambda ctx, path: write(path, "/* GNU ld script */\nINPUT(-lc)\n")),
        ("empty", "neox_comm_empty.so", lambda ctx, path: write(path, b"")),
        ("random", "neox_comm_random.so", lambda ctx, path: write(path, bytes((i * 7919 + 13) % 256
                                                                              for i in range(20000)))),
        ("elf-magic-then-garbage", "neox_comm_magic.so", lambda ctx, path: write(path, b"\x7fELF" + b"\xff" * 4000)),
        ("elf-32-bit", "neox_comm_elf32.so", from_local(elf_patch(4, "B", 1))),
        ("elf-big-endian", "neox_comm_elfbe.so", from_local(elf_patch(5, "B", 2))),
        ("elf-arm-machine", "neox_comm_arm.so", from_local(elf_patch(18, "<H", 0x28))),
        ("elf-phoff-huge", "neox_comm_phoff.so", from_local(elf_patch(32, "<Q", 1 << 60))),
        ("elf-phnum-65535", "neox_comm_phnum.so", from_local(elf_patch(56, "<H", 0xffff))),
        ("elf-shoff-huge", "neox_comm_shoff.so", from_local(elf_patch(40, "<Q", 1 << 60))),
        ("middle-zeroed", "neox_comm_zeroed.so",
         from_local(lambda b: b[:len(b) // 4] + b"\0" * (len(b) // 2) + b[len(b) // 4 + len(b) // 2:])),
        ("directory", "neox_comm_dir.so", lambda ctx, path: os.makedirs(path)),
        ("fifo", "neox_comm_fifo.so", lambda ctx, path: os.mkfifo(path)),
        ("dangling-symlink", "neox_comm_dangling.so", lambda ctx, path: os.symlink("nowhere.so", path)),
        ("symlink-loop", "neox_comm_loop.so", lambda ctx, path: os.symlink(os.path.basename(path), path)),
        ("copy-misnamed", "neox_comm_other.so", from_local(lambda b: b)),
        ("shadow-cpu-truncated", "neox_backend_cpu.so",
         lambda ctx, path: write(path, read(os.path.join(ctx.plugin_dir, "neox_backend_cpu.so"))[:50000])),
        ("shadow-cpu-text", "neox_backend_cpu.so", lambda ctx, path: write(path, "not a library\n")),
    ]
    if ctx.test_plugin_dir:
        for f in sorted(os.listdir(ctx.test_plugin_dir)):
            if f.endswith(".so"):
                files.append(("test-" + f[len("neox_"):-3], f,
                              lambda ctx, path, f=f: shutil.copyfile(os.path.join(ctx.test_plugin_dir, f), path)))
    return files


def probes_plugin(ctx):
    P = []
    env = {"NEOX_PLUGIN_PATH": "pp"}

    def place(name, maker):

        def setup(ctx, d):
            os.makedirs(os.path.join(d, "pp"))
            maker(ctx, os.path.join(d, "pp", name))

        return setup

    def listed(name):
        return lambda ctx, d, r: None if name.encode() in r.out + r.err else "%s is not listed" % name

    for label, name, maker in bad_plugin_files(ctx):
        setup = place(name, maker)
        # Zeroed code: its entry point runs zeros and faults in the plugin's own code.
        own_crash = label in OWN_CODE_CRASH
        test_plugin = label.startswith("test-")
        shadow = label.startswith("shadow-")
        fifo = label == "fifo"
        t = TIMEOUT_BLOCKING if fifo else TIMEOUT
        P.append(Probe("plugin/%s:plugins" % label, "plugin", ["plugins"], expect="ok", env=env, setup=setup,
                       check=listed(name), timeout=t, plugin_crash=own_crash,
                       what="neox plugins lists the file (loaded, or rejected with why)"))
        P.append(Probe("plugin/%s:train" % label, "plugin", train(ctx, "training.train_iters=1"), expect="either" if
                       shadow else "ok", env=env, setup=setup, names=(name,), timeout=t,
                       check=lambda ctx, d, r: None if os.path.isdir(os.path.join(d, "ck", "global_step1")) else
                       "no checkpoint saved", what="a bad file the run does not need must not break it"))
        P.append(Probe("plugin/%s:generate" % label, "plugin", gen_ck(), expect="either" if shadow else "ok", env=env,
                       setup=s_chain(s_copy("ck", "ck"), setup), names=(name,), check=c_stdout("gen4"), timeout=t))
        P.append(Probe("plugin/%s:plugins--check" % label, "plugin", ["plugins", "--check", "pp/" + name],
                       expect="either" if test_plugin else "error", env=env, setup=setup, names=(name,), timeout=t,
                       plugin_crash=own_crash, what="checking one bad file: an error naming it"))
        if name.startswith("neox_comm_") and not test_plugin:
            P.append(Probe("plugin/%s:train-selects-it" % label, "plugin",
                           train(ctx, "plugins.comm=" + name[len("neox_comm_"):-3], "training.train_iters=1"), env=env,
                           setup=setup, names=(name,), timeout=t, plugin_crash=own_crash,
                           what="a run that needs the bad plugin: an error"))
    for name, path in sorted(ctx.crash_plugins.items()):
        label = "crashing-" + name[len("neox_comm_"):-3]
        setup = place(name, lambda ctx, p, path=path: shutil.copyfile(path, p))
        P.append(Probe("plugin/%s:plugins" % label, "plugin", ["plugins"], expect="ok", env=env, setup=setup,
                       check=listed(name), plugin_crash=True, what="listing loads it: the plugin's own crash"))
        P.append(Probe("plugin/%s:plugins--check" % label, "plugin", ["plugins", "--check", "pp/" + name],
                       expect="either", env=env, setup=setup, names=(name,), plugin_crash=True))
        P.append(Probe("plugin/%s:train-selects-it" % label, "plugin",
                       train(ctx, "plugins.comm=" + name[len("neox_comm_"):-3], "training.train_iters=1"), env=env,
                       setup=setup, names=(name,), plugin_crash=True))
        P.append(Probe("plugin/%s:train" % label, "plugin", train(ctx, "training.train_iters=1"), expect="ok", env=env,
                       setup=setup, check=lambda ctx, d, r: None if os.path.isdir(os.path.join(d, "ck", "global_step1"))
                       else "no checkpoint saved", what="a run that does not need the crashing plugin must not load it"))
        P.append(Probe("plugin/%s:generate" % label, "plugin", gen_ck(), expect="ok", env=env,
                       setup=s_chain(s_copy("ck", "ck"), setup), check=c_stdout("gen4")))
    return P


# ---------------------------------------------------------------------------
# class signal: a closed pipe, SIGHUP, a file-size limit, a dataset shrinking


def spawn(ctx, argv, d, env=None, stdout=None, name="run"):
    """Starts argv in d with stdout and stderr to files d/<name>.out/.err (or stdout a pipe)."""
    full_env = dict(ctx.env)
    full_env.update(env or {})
    out = subprocess.PIPE if stdout == "pipe" else open(os.path.join(d, name + ".out"), "wb")
    err = open(os.path.join(d, name + ".err"), "wb")
    proc = subprocess.Popen([str(a) for a in argv], cwd=d, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=err, start_new_session=True)
    if out is not subprocess.PIPE:
        out.close()
    err.close()
    proc.cmd = shlex.join(["neox"] + [str(a) for a in argv[1:]])
    proc.logname = name
    return proc


def wait_for(pred, timeout, interval=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def finish(proc, d, timeout, r=None):
    """Waits for a spawned process; fills a Result from its log files."""
    r = r or Result(cmd=proc.cmd)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        r.timed_out = True
        kill_group(proc)
        proc.wait()
    if not r.timed_out:
        if proc.returncode < 0:
            r.sig = -proc.returncode
        else:
            r.rc = proc.returncode
    outp = os.path.join(d, proc.logname + ".out")
    if os.path.exists(outp):
        r.out = read(outp)
    r.err = read(os.path.join(d, proc.logname + ".err"))
    return r


def training_started(d, name="run"):
    """True once a step has been logged (on stdout or stderr)."""
    for ext in (".out", ".err"):
        try:
            if re.search(rb"step\s+\d+", read(os.path.join(d, name + ext))):
                return True
        except FileNotFoundError:
            pass
    return False


def d_head1(ctx, p, d):
    """neox ... | head -1: read one line of stdout, then close the pipe."""
    proc = spawn(ctx, [ctx.neox] + p.args, d, env=p.env, stdout="pipe")
    import select
    line, end = b"", time.monotonic() + p.timeout
    while not line.endswith(b"\n") and time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            c = os.read(proc.stdout.fileno(), 1)
            if not c:
                break
            line += c
    proc.stdout.close()
    r = finish(proc, d, max(1, end - time.monotonic()))
    r.cmd += " | head -1"
    r.out = line
    return r


def d_signal(sig, delay=0.3):
    """Sends sig once training has logged a step."""

    def driver(ctx, p, d):
        proc = spawn(ctx, [ctx.neox] + p.args, d, env=p.env)
        started = wait_for(lambda: training_started(d), 30)
        time.sleep(delay)
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        r = finish(proc, d, p.timeout)
        r.cmd += "  (%s after the first step)" % signame(sig)
        if not started:
            r.note = "training had not logged a step after 30 s"
        return r

    return driver


def d_shrink(size_fn, rel):
    """Truncates d/rel to size_fn(size) once training has logged a step."""

    def driver(ctx, p, d):
        proc = spawn(ctx, [ctx.neox] + p.args, d, env=p.env)
        wait_for(lambda: training_started(d), 30)
        path = os.path.join(d, rel)
        os.truncate(path, size_fn(os.path.getsize(path)))
        r = finish(proc, d, p.timeout)
        r.cmd += "  (%s truncated while training)" % rel
        return r

    return driver


def fsize(n):
    """argv prefix that limits the size of files written (RLIMIT_FSIZE) to n bytes."""
    if shutil.which("prlimit"):
        return ["prlimit", "--fsize=%d" % n]
    return [sys.executable, "-c", "import os,resource,sys;resource.setrlimit(resource.RLIMIT_FSIZE,(%d,%d));"
            "os.execv(sys.argv[1],sys.argv[1:])" % (n, n)]


def c_saved(rel="ck"):
    """A checkpoint was saved: d/rel/latest names a global_step directory with weights."""

    def check(ctx, d, r):
        try:
            name = read(os.path.join(d, rel, "latest")).decode().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return "no checkpoint saved (%s/latest missing)" % rel
        if not os.path.isfile(os.path.join(d, rel, name, "model.safetensors")):
            return "%s/latest names %s, which has no weights" % (rel, name)
        return None

    return check


def probes_signal(ctx):
    P = []
    long_run = ["training.train_iters=100000", "training.checkpoint_factor=100000"]
    P.append(Probe("signal/train|head-1", "signal", train(ctx, "training.train_iters=200",
                                                          "training.checkpoint_factor=50"), expect="either",
                   driver=d_head1, check=c_ckpt_complete("ck", 200), keep=c_ckpt_complete("ck", 200), stdout_ok=True,
                   names=(STDOUT_NAMES,), what="neox train | head -1: training goes on and saves"))
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        P.append(Probe("signal/%s-during-training" % signame(sig), "signal", train(ctx, *long_run), expect="either",
                       driver=d_signal(sig), check=c_saved(), keep=c_saved(), stdout_ok=True, timeout=60,
                       what="%s saves a checkpoint and exits, as SIGTERM does" % signame(sig)))
    # A file-size limit: an error naming the file, never SIGXFSZ; what was saved before stays.
    for n in (100, 2000, 20000, 100000):
        P.append(Probe("signal/fsize-%d:train" % n, "signal", train(ctx), wrap=fsize(n),
                       names=(("ck/", "runs/", "train.log", "metrics.jsonl", "global_step"),),
                       what="RLIMIT_FSIZE %d bytes while training saves" % n))
        P.append(Probe("signal/fsize-%d:train-resume" % n, "signal", train(ctx, "training.load=ck"), wrap=fsize(n),
                       setup=s_copy("ck", "ck"), names=(("ck/", "runs/", "train.log", "metrics.jsonl", "global_step"),),
                       keep=k_tree("ck/global_step4", lambda ctx: os.path.join(ctx.ck, "global_step4")),
                       what="the checkpoint saved before the limit stays"))
    for n in (1000, 20000):
        P.append(Probe("signal/fsize-%d:score" % n, "signal", score(), wrap=fsize(n), setup=s_hf(),
                       names=("out.safetensors",)))
        P.append(Probe("signal/fsize-%d:convert--to-hf" % n, "signal", ["convert", "--to-hf", "ck", "--out", "o"],
                       wrap=fsize(n), setup=s_copy("ck", "ck"), names=(("o/", "model.safetensors", "config.json"),)))
        P.append(Probe("signal/fsize-%d:preprocess" % n, "signal", ["preprocess", "--input", "text", "--output-prefix",
                                                                     "p"], wrap=fsize(n),
                       setup=s_copy(os.path.join(ctx.fx, "text"), "text"), names=("p_text_document",)))
        P.append(Probe("signal/fsize-%d:data-merge" % n, "signal",
                       ["data", "merge", "--input", "%s,%s" % (ctx.data, ctx.data), "--output-prefix", "q"],
                       wrap=fsize(n), names=(("q.bin", "q.idx"),)))
        P.append(Probe("signal/fsize-%d:tokenize--output" % n, "signal",
                       ["tokenize", "--tokenizer-type", "byte", "--input", "big.txt", "--output", "ids.txt"],
                       wrap=fsize(n), setup=s_write("big.txt", "hello world " * 5000), names=("ids.txt",)))
    # The dataset shrinks under a running trainer: an error naming the file (or the run reads what it had).
    ds = lambda ctx, d: [copy(ctx.data + ext, os.path.join(d, "ds", "t" + ext)) for ext in (".idx", ".bin")]
    for label, fn in [("to-0", lambda n: 0), ("to-half", lambda n: n // 2), ("by-one-page", lambda n: max(0, n - 4096))]:
        P.append(Probe("signal/dataset-bin-shrinks-%s" % label, "signal",
                       train(ctx, "plugins.options.mmap.data_path=ds/t", "training.train_iters=3000",
                             "training.checkpoint_factor=100000"), expect="either", setup=ds,
                       driver=d_shrink(fn, "ds/t.bin"), names=("t.bin",), stdout_ok=True, timeout=120,
                       what="the .bin truncated while training: an error naming it, never SIGBUS"))
    P.append(Probe("signal/dataset-idx-shrinks", "signal",
                   train(ctx, "plugins.options.mmap.data_path=ds/t", "training.train_iters=3000",
                         "training.checkpoint_factor=100000"), expect="either", setup=ds,
                   driver=d_shrink(lambda n: 0, "ds/t.idx"), names=("t.idx",), stdout_ok=True, timeout=120))
    return P


def c_ckpt_complete(rel, step):
    """d/rel/latest names global_step<step> and its files are there."""

    def check(ctx, d, r):
        base = os.path.join(d, rel)
        try:
            name = read(os.path.join(base, "latest")).decode().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return "%s/latest missing: no checkpoint saved" % rel
        if name != "global_step%d" % step:
            return "%s/latest names %s, not global_step%d" % (rel, name, step)
        for f in ("model.safetensors", "optimizer.safetensors", "state.json", "config.toml"):
            if not os.path.isfile(os.path.join(base, name, f)):
                return "%s/%s/%s missing" % (rel, name, f)
        return None

    return check


# ---------------------------------------------------------------------------
# class savedir: one run's save directory is not another's


def k_old_run_kept(ctx, d, r):
    """The run saved in d/ck (steps 3 and 4) is still there, unchanged, and latest does not go back."""
    for k in (3, 4):
        for f in ("model.safetensors", "optimizer.safetensors", "state.json"):
            mine = os.path.join(d, "ck", "global_step%d" % k, f)
            if not os.path.isfile(mine) or read(mine) != read(os.path.join(ctx.ck, "global_step%d" % k, f)):
                return "ck/global_step%d/%s of the earlier run was replaced or removed" % (k, f)
    try:
        latest = read(os.path.join(d, "ck", "latest")).decode().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return "ck/latest was removed"
    m = re.fullmatch(r"global_step(\d+)", latest)
    if not m or int(m.group(1)) < 4:
        return "ck/latest moved from global_step4 to %s" % latest
    return None


def d_two_trainers(second_args, expect_pid):
    """A trainer saves into ck every step; a second command is started on ck meanwhile."""

    def driver(ctx, p, d):
        first = spawn(ctx, [ctx.neox] + train(ctx, "training.train_iters=300"), d, name="first")
        saw = wait_for(lambda: os.path.exists(os.path.join(d, "ck", "latest")), 30, 0.002)
        second = run_cmd(ctx, [ctx.neox] + second_args(ctx), d, timeout=p.timeout)
        running = first.poll() is None
        fr = finish(first, d, 120)
        second.extra["first"] = fr
        second.extra["pid"] = first.pid
        second.note = "first trainer (pid %d): %s%s" % (first.pid, status_of(fr), "" if running else
                                                        ", had already finished when the second ended")
        if not saw:
            second.note += "; it saved nothing within 30 s"
        if expect_pid:
            p.names = ((str(first.pid), "locked"),)
        return second

    return driver


def k_second_refused(ctx, d, r):
    """keep: the second trainer did not train in a save directory the first one holds."""
    if re.search(rb"step\s+\d+", r.out + r.err):
        return "the second trainer trained in the save directory the first one was saving into"
    return k_first_trainer_ok(ctx, d, r)


def k_first_trainer_ok(ctx, d, r):
    fr = r.extra.get("first")
    if fr is None:
        return None
    if fr.timed_out or fr.sig is not None or fr.rc != 0:
        return "the first trainer failed (%s): %s" % (status_of(fr), first_line(fr.err) or first_line(fr.out))
    return c_ckpt_complete("ck", 300)(ctx, d, r)


def probes_savedir(ctx):
    P = []
    ck = s_copy("ck", "ck")
    # The other run has another seed: taking over its directory changes its checkpoints.
    for iters in (2, 6):
        P.append(Probe("savedir/fresh-run-into-a-save-dir:train_iters=%d" % iters, "savedir",
                       train(ctx, "training.train_iters=%d" % iters, "training.seed=99"), expect="either", setup=ck,
                       keep=k_old_run_kept, names=("ck", "load"),
                       what="a fresh run into another run's save directory: resume it or refuse naming the way out"))
    P.append(Probe("savedir/fresh-run-into-a-save-dir-without-latest", "savedir", train(ctx, "training.seed=99"),
                   expect="either",
                   setup=s_chain(ck, lambda ctx, d: os.unlink(os.path.join(d, "ck", "latest"))),
                   keep=lambda ctx, d, r: k_tree("ck/global_step4", lambda ctx: os.path.join(ctx.ck, "global_step4"))(
                       ctx, d, r), names=("ck", "load")))
    P.append(Probe("savedir/fresh-run-into-a-dir-of-other-files", "savedir", train(ctx), expect="either",
                   setup=s_write("ck/notes.txt", "mine\n"), check=c_ckpt("ck", 6), names=("ck",),
                   keep=lambda ctx, d, r: None if os.path.isfile(os.path.join(d, "ck", "notes.txt")) else
                   "ck/notes.txt was removed"))
    P.append(Probe("savedir/fresh-run-into-an-empty-dir", "savedir", train(ctx), expect="ok",
                   setup=lambda ctx, d: os.makedirs(os.path.join(d, "ck")), check=c_ckpt("ck", 6),
                   what="control: an empty save directory is a fresh run's"))
    P.append(Probe("savedir/resume", "savedir", train(ctx, "training.load=ck"), expect="ok", setup=ck,
                   check=c_ckpt("ck", 6), what="control: resuming continues bit-identically"))
    P.append(Probe("savedir/resume-from-global_step3", "savedir", train(ctx, "training.load=ck/global_step3"),
                   expect="either", setup=ck, check=c_ckpt("ck", 6),
                   keep=lambda ctx, d, r: c_ckpt("ck", 4)(ctx, d, r) if os.path.isdir(os.path.join(
                       d, "ck", "global_step4")) else None, names=("global_step",),
                   what="resuming an older step of the same directory (step 4 is saved again, the same)"))
    P.append(Probe("savedir/finetune-into-a-save-dir", "savedir",
                   train(ctx, "training.load=%s" % os.path.join(ctx.ck, "global_step3"), "training.finetune=true"),
                   expect="either", setup=ck, keep=k_old_run_kept, names=("ck",),
                   what="a fine-tuning run into another run's save directory"))
    # Two writers on one save directory: the second is refused naming the first's PID.
    P.append(Probe("savedir/two-trainers:second-resumes", "savedir", [], driver=d_two_trainers(
        lambda ctx: train(ctx, "training.train_iters=300", "training.load=ck"), True), keep=k_second_refused,
                   timeout=120, what="a second trainer resuming the same directory while the first saves"))
    P.append(Probe("savedir/two-trainers:second-fresh", "savedir", [], driver=d_two_trainers(
        lambda ctx: train(ctx, "training.train_iters=300"), False), names=("ck",), keep=k_second_refused,
                   timeout=120))
    P.append(Probe("savedir/two-trainers:reader-generates", "savedir", [], expect="ok", driver=d_two_trainers(
        lambda ctx: gen_ck(), False), keep=k_first_trainer_ok, timeout=120,
                   check=lambda ctx, d, r: None if re.fullmatch(rb"[0-9,]+\n?", r.out) else "no ids printed",
                   what="a reader of a directory being saved into loads a complete checkpoint"))
    return P


# ---------------------------------------------------------------------------
# class options: unknown, malformed and missing option values, for every
# command. The error names the option (and the value).


def parse_help(text_):
    """[(long name, takes a value, default or None)] from a cxxopts --help text."""
    opts, cur = [], None
    for line in text_.splitlines():
        # Option lines are indented by 2 ("-a, --all" or "-a arg") or 6 ("--name arg"); descriptions more.
        m = re.match(r"( {2}(?=-)| {6}(?=--))(?:-(\w)(?:, )?)?(?:--([a-z0-9][a-z0-9-]*))?( ?arg)?(?:\s+(.*))?$", line)
        if m and (m.group(2) or m.group(3)) and line[len(m.group(1))] == "-":
            cur = [m.group(3) or m.group(2), bool(m.group(4)), m.group(5) or ""]
            opts.append(cur)
        elif cur and line.startswith(" " * 10) and line.strip():
            cur[2] += " " + line.strip()
        else:
            cur = None
    out = []
    for name, takes, desc in opts:
        m = re.search(r"\(default: ([^)]*)\)\s*$", desc)
        out.append((name, takes, m.group(1).strip() if m else None))
    return out


def is_number(s):
    return s is not None and re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?", s) is not None


def drop_option(args, opt):
    """args without --opt and its value (when it takes one)."""
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--" + opt or a == "-" + opt:
            skip = i + 1 < len(args) and not args[i + 1].startswith("--")
            continue
        out.append(a)
    return out


# Options that take numbers although their help shows no default.
NUMERIC_WITHOUT_DEFAULT = {"bos-token-id", "eos-token-id", "eod-id"}
# Numeric options that take real numbers (where 1e20 is a valid value).
FLOAT_OPTIONS = {"temperature", "top-p", "size", "mem-gbs", "gemm-tflops", "l2-mb", "progress-interval"}


def probes_options(ctx):
    P = []
    ck, hf = s_copy("ck", "ck"), s_hf()
    bases = [
        ("train", ["train", ctx.tiny, "--set", "training.train_iters=1"], None, ["train"]),
        ("generate", gen_ck(), ck, ["generate"]),
        ("score", score(), hf, ["score"]),
        ("tokenize", ["tokenize", "--tokenizer-type", "byte", "--text", "hi"], None, ["tokenize"]),
        ("preprocess", ["preprocess", "--input", "a.txt", "--output-prefix", "p"], s_write("a.txt", "hello\n"),
         ["preprocess"]),
        ("data-inspect", ["data", "inspect", ctx.data], None, ["data", "inspect"]),
        ("data-merge", ["data", "merge", "--input", ctx.data, "--output-prefix", "q"], None, ["data", "merge"]),
        ("plugins", ["plugins"], None, ["plugins"]),
        ("config", ["config", "--check", ctx.tiny], None, ["config"]),
        ("convert", ["convert", "--to-hf", "ck", "--out", "o"], ck, ["convert"]),
        ("bench-train", ["bench", "train", "--config", ctx.tiny, "--steps", "1", "--warmup", "0"], None, ["bench"]),
        ("bench-op", ["bench", "op", "gelu_forward", "--a", "cpu", "--b", "cpu", "--size", "0.01", "--runs", "1",
                      "--warmup", "0"], None, ["bench"]),
        ("bench-comm", ["bench", "comm", "--comm", "local", "--sizes", "4K", "--runs", "1", "--warmup", "0"], None,
         ["bench", "comm"]),
    ]
    for cname, base, setup, helpcmd in bases:
        P.append(Probe("options/%s:unknown-option" % cname, "options", base + ["--bogus-option"], setup=setup,
                       names=("bogus-option",)))
        P.append(Probe("options/%s:unknown-option-with-value" % cname, "options", base + ["--bogus-option=3"],
                       setup=setup, names=("bogus-option",)))
        P.append(Probe("options/%s:unknown-short-option" % cname, "options", base + ["-Z"], setup=setup, names=("Z",)))
        P.append(Probe("options/%s:stray-argument" % cname, "options", base + ["stray-argument"], setup=setup,
                       names=("stray-argument",)))
        h = run_cmd(ctx, [ctx.neox] + helpcmd + ["--help"], ctx.fx, timeout=30)
        seen = set()
        for name, takes, default in parse_help(text(h.out + h.err)):
            if name in ("help", "h") or name in seen:
                continue
            seen.add(name)
            flag = ("--" if len(name) > 1 else "-") + name
            rest = drop_option(base, name)
            pid = "options/%s:%s" % (cname, flag)
            if not takes:
                P.append(Probe(pid + "=maybe", "options", rest + [flag + "=maybe"], setup=setup, names=(name,),
                               what="a flag given a value that is not a boolean"))
                continue
            P.append(Probe(pid + ":missing-value", "options", rest + [flag], setup=setup, names=(name,),
                           what="the option's value left out"))
            numeric = is_number(default) or name in NUMERIC_WITHOUT_DEFAULT
            if not numeric:
                continue
            real = name in FLOAT_OPTIONS
            values = [("abc", "abc", "error"), ("empty", "", "error"), ("trailing-junk", "5x", "error"),
                      ("overflow", "99999999999999999999", "either" if real else "error"), ("1.5", "1.5", "either"),
                      ("minus-1", "-1", "either"), ("hex", "0x10", "either")]
            if name == "size":  # bench's scale of the op's shape: 1 is already a long run on a CPU
                values = [v for v in values if v[0] in ("abc", "empty", "overflow")] + [("trailing-junk", "0.01x",
                                                                                         "error")]
            for label, value, expect in values:
                P.append(Probe(pid + "=" + label, "options", rest + [flag, value], setup=setup, expect=expect,
                               names=(name, value) if value else (name,), timeout=30,
                               what="%s %r: an error naming the option and the value" % (flag, value)))
    # --set: malformed overrides, on every command that takes them.
    sets = [("no-equals", "model.hidden_size", ("model.hidden_size",)), ("empty-key", "=1", ("=1",)),
            ("no-key", "model.=1", ("model.",)), ("leading-dot", ".x=1", (".x",)),
            ("no-value", "model.hidden_size=", ("model.hidden_size",)),
            ("wrong-type", "model.hidden_size=abc", ("model.hidden_size", "abc")),
            ("unknown-key", "model.bogus_key=1", ("model.bogus_key",)),
            ("unknown-table", "bogus_table.key=1", ("bogus_table",)),
            ("out-of-range", "model.num_layers=0", ("model.num_layers",)),
            ("table-as-value", "model=1", ("model",)),
            ("nested-table", "plugins.options.cpu.x.y=1", ("plugins.options.cpu",))]
    for cname, base, setup in [("train", ["train", ctx.tiny, "--set", "training.train_iters=1"], None),
                               ("config", ["config", "--check", ctx.tiny], None), ("generate", gen_ck(), ck),
                               ("score", score(), hf), ("convert", ["convert", "--to-hf", "ck", "--out", "o"], ck)]:
        for label, value, names in sets:
            P.append(Probe("options/%s:--set-%s" % (cname, label), "options", base + ["--set", value], setup=setup,
                           names=names, what="--set %s" % value))
    # Commands and subcommands that do not exist.
    for args, names in [(["bogus-command"], ("bogus-command",)), (["data", "bogus"], ("bogus",)), (["data"], ("data",)),
                        (["bench", "bogus"], ("bogus",)), (["bench"], ("bench",)), (["--bogus"], ("bogus",)),
                        (["data", "inspect"], (("PREFIX", "prefix"),)), (["score"], (("model", "tokens"),)),
                        (["generate"], ("model",)), (["convert"], (("to-hf", "from-hf"),)),
                        (["convert", "--to-hf", "x", "--from-hf", "y", "--out", "o"], ("to-hf", "from-hf")),
                        (["tokenize"], (("tokenizer-type", "text", "input"),)),
                        (["preprocess"], (("input", "output-prefix"),)), (["config"], (("check", "reference"),)),
                        (["data", "merge"], (("input", "output-prefix"),))]:
        P.append(Probe("options/command:%s" % " ".join(args), "options", args, names=names))
    return P


# ---------------------------------------------------------------------------
# class toml: mutations of a valid config. Errors name the file (and line)
# and the key. The keys and ranges come from `neox config --reference`.


def parse_reference(md):
    """[(section, key, type, allowed)] from the Markdown reference."""
    keys, section = [], None
    for line in md.splitlines():
        m = re.match(r"## \[(.+)\]", line)
        if m:
            section = m.group(1).replace("\\", "")
            continue
        m = re.match(r"\| `([a-z0-9_]+)` \| ([^|]+) \| ([^|]*) \| ([^|]*) \|", line)
        if m and section and "<" not in section:
            keys.append((section, m.group(1), m.group(2).strip(), m.group(4).strip()))
    return keys


def range_values(typ, allowed):
    """Out-of-range TOML values for an [a, b] / (a, b] / >= a range."""
    out = []
    m = re.fullmatch(r"([\[(])\s*(-?[0-9.e+-]+),\s*(-?[0-9.e+-]+)\s*([\])])", allowed.split(" ")[0] if
                     allowed.startswith(("[", "(")) else allowed)
    if not m:
        m2 = re.fullmatch(r">= (-?[0-9.e+]+)", allowed)
        if m2:
            lo = float(m2.group(1))
            out.append(("below-min", "-1" if typ == "integer" else repr(lo - 1.0)))
        return out
    lo, hi = float(m.group(2)), float(m.group(3))
    if typ == "integer":
        out.append(("below-min", str(int(lo) - 1)))
        out.append(("above-max", str(int(hi) + 1)))
    else:
        out.append(("below-min", repr(lo) if m.group(1) == "(" else repr(lo - abs(lo or 1) * 0.5 - 1e-3)))
        out.append(("above-max", repr(hi) if m.group(4) == ")" else repr(hi * 2 + 1)))
    return out


WRONG_TYPES = {
    "integer": [("string", '"12"'), ("float", "1.5"), ("bool", "true"), ("array", "[1]")],
    "float": [("string", '"0.5"'), ("bool", "false"), ("array", "[0.5]")],
    "boolean": [("string", '"yes"'), ("integer", "1")],
    "string": [("integer", "7"), ("bool", "true"), ("array", '["a"]'), ("table", "{ a = 1 }")],
}


def probes_toml(ctx):
    P = []
    h = run_cmd(ctx, [ctx.neox, "config", "--reference"], ctx.fx, timeout=30)
    keys = parse_reference(text(h.out))
    if len(keys) < 20:
        raise SetupError("could not read the keys from `neox config --reference` (%d found)" % len(keys))
    base = ctx.tiny_text

    def cfg(textfn):
        return s_write("c.toml", lambda ctx: textfn(ctx.tiny_text))

    def mutated(section, key, value):
        return lambda t: toml_set(t, section, key, value)

    check = lambda: ["config", "--check", "c.toml"]
    for i, (section, key, typ, allowed) in enumerate(keys):
        full = "%s.%s" % (section, key)
        values = []
        if typ.startswith("array"):
            values += [("scalar", '"x"' if "string" in typ else "1"), ("wrong-element", "[true]" if "string" in typ
                                                                       else '["a", "b"]')]
            if "2 floats" in typ:
                values += [("one-element", "[0.9]"), ("three-elements", "[0.9, 0.9, 0.9]"),
                           ("out-of-range", "[0.9, 1.5]")]
        else:
            values += WRONG_TYPES.get(typ, [])
            values += range_values(typ, allowed)
            if typ == "float":
                values += [("nan", "nan"), ("inf", "inf"), ("minus-inf", "-inf")]
            if typ == "integer" and allowed.startswith("["):
                values += [("int64-max", "9223372036854775807"), ("int64-min", "-9223372036854775808")]
            if typ == "string" and "`" in allowed and "," in allowed and "plugin name" not in allowed:
                values.append(("not-allowed", '"bogus-value"'))
        for label, value in values:
            P.append(Probe("toml/%s=%s" % (full, label), "toml", check(), setup=cfg(mutated(section, key, value)),
                           names=("c.toml", full), what="%s = %s in the file" % (full, value)))
        if values:  # the first wrong value through --set, and through train
            label, value = values[0]
            P.append(Probe("toml/%s=%s:--set" % (full, label), "toml", ["config", "--check", ctx.tiny, "--set",
                                                                       "%s=%s" % (full, value)], names=(full,)))
            if i % 3 == 0:
                P.append(Probe("toml/%s=%s:train" % (full, label), "toml", ["train", "c.toml"],
                               setup=cfg(mutated(section, key, value)), names=("c.toml", full)))
    # Settings that disagree, unknown and misspelt keys.
    for label, edits, names in [
        ("hidden-not-divisible-by-heads", [("model", "hidden_size", "33")], ("hidden_size", "num_attention_heads")),
        ("seq-longer-than-positions", [("model", "seq_length", "32")], ("seq_length", "max_position_embeddings")),
        ("odd-rotary-dims", [("model", "rotary_pct", "0.2")], ("rotary_pct",)),
        ("beta1-and-betas", [("optimizer", "beta1", "0.8")], ("beta1", "betas")),
        ("vocab-beyond-tokenizer", [("model", "vocab_size", "200")], ("vocab_size",)),
        ("unknown-key-model", [("model", "bogus_key", "1")], ("model.bogus_key",)),
        ("unknown-key-training", [("training", "bogus_key", "1")], ("training.bogus_key",)),
        ("unknown-key-optimizer", [("optimizer", "bogus_key", "1")], ("optimizer.bogus_key",)),
        ("unknown-key-plugins", [("plugins", "bogus_key", '"x"')], ("plugins.bogus_key",)),
        ("unknown-key-tokenizer", [("tokenizer", "bogus_key", '"x"')], ("tokenizer.bogus_key",)),
        ("misspelt-hiden_size", [("model", "hiden_size", "64")], ("hiden_size",)),
        ("unknown-table", [("bogus_table", "x", "1")], ("bogus_table",)),
        ("nested-plugin-option", [("plugins.options.cpu", "x", "{ y = 1 }")], ("plugins.options.cpu",)),
        ("unknown-kernel-op", [("plugins.kernels", "bogus_op", '"cpu"')], ("bogus_op",)),
    ]:
        def fn(t, edits=edits):
            for e in edits:
                t = toml_set(t, *e)
            return t

        # The vocabulary is checked against the tokenizer when the run starts.
        args = ["train", "c.toml"] if label == "vocab-beyond-tokenizer" else check()
        P.append(Probe("toml/%s" % label, "toml", args, setup=cfg(fn), names=("c.toml", names[0])))
    # Syntax: each mutation of the text must give an error naming the file (and not crash).
    syntax = [
        ("unclosed-string", lambda t: t.replace('backend = "cpu"', 'backend = "cpu')),
        ("unclosed-array", lambda t: t.replace("betas = [0.9, 0.95]", "betas = [0.9, 0.95")),
        ("missing-value", lambda t: t.replace("hidden_size = 32", "hidden_size =")),
        ("missing-equals", lambda t: t.replace("hidden_size = 32", "hidden_size 32")),
        ("duplicate-key", lambda t: t.replace("hidden_size = 32", "hidden_size = 32\nhidden_size = 64")),
        ("duplicate-table", lambda t: t + "\n[model]\nnum_layers = 2\n"),
        ("bad-escape", lambda t: t.replace('backend = "cpu"', 'backend = "c\\qpu"')),
        ("bad-unicode-escape", lambda t: t.replace('backend = "cpu"', 'backend = "\\uD800"')),
        ("control-char-in-string", lambda t: t.replace('backend = "cpu"', 'backend = "c\x01pu"')),
        ("non-utf8-byte", lambda t: t.replace('backend = "cpu"', 'backend = "c\udcffpu"')),
        ("nul-byte", lambda t: t.replace("hidden_size = 32", "hidden_size = 3\x002")),
        ("unclosed-table-header", lambda t: t.replace("[model]", "[model")),
        ("array-of-tables-clash", lambda t: t + "\n[[model]]\nx = 1\n"),
        ("dotted-key-clash", lambda t: "model = 1\n" + t),
        ("bare-equals", lambda t: t + "\n= 1\n"),
        ("integer-overflow", lambda t: t.replace("hidden_size = 32", "hidden_size = 18446744073709551616")),
        ("float-overflow", lambda t: t.replace("lr = 1e-2", "lr = 1e999")),
        ("datetime-as-integer", lambda t: t.replace("hidden_size = 32", "hidden_size = 1979-05-27T07:32:00Z")),
        ("leading-zero", lambda t: t.replace("hidden_size = 32", "hidden_size = 032")),
        ("nested-arrays-100000", lambda t: t.replace("betas = [0.9, 0.95]", "betas = " + "[" * 100000 +
                                                     "]" * 100000)),
        ("nested-inline-tables-100000", lambda t: t + "\n[bogus]\nx = " + "{ a = " * 100000 + "1" + " }" * 100000 +
         "\n"),
        ("key-of-1MB", lambda t: t + "\n" + "k" * (1 << 20) + " = 1\n"),
        ("string-of-16MB", lambda t: t.replace('pos_emb = "rotary"', 'pos_emb = "' + "r" * (16 << 20) + '"')),
        ("binary-garbage", lambda t: "".join(chr((i * 7919 + 13) % 256) for i in range(4000))),
    ]
    for label, fn in syntax:
        P.append(Probe("toml/syntax:%s" % label, "toml", check(),
                       setup=s_write("c.toml", lambda ctx, fn=fn: fn(ctx.tiny_text).encode("utf-8", "surrogateescape")),
                       names=("c.toml",), what="malformed TOML: an error naming the file"))
    # Valid but unusual texts: accepted, or refused with the file named.
    for label, fn, expect in [
        ("crlf-line-endings", lambda t: t.replace("\n", "\r\n"), "ok"),
        ("utf8-bom", lambda t: "\ufeff" + t, "either"),
        ("no-final-newline", lambda t: t.rstrip("\n"), "ok"),
        ("empty-file", lambda t: "", "either"),
        ("comments-only", lambda t: "# nothing\n", "either"),
    ]:
        P.append(Probe("toml/valid:%s" % label, "toml", check(), expect=expect,
                       setup=s_write("c.toml", lambda ctx, fn=fn: fn(ctx.tiny_text)), names=("c.toml",)))
    # Truncations at several points: a valid prefix is accepted, anything else names the file.
    n = len(base.encode())
    for cut in sorted({1, 7, n // 7, n // 5, n // 3, n // 2, 2 * n // 3, n - 2}):
        P.append(Probe("toml/truncated-at-%d" % cut, "toml", check(), expect="either",
                       setup=s_write("c.toml", lambda ctx, cut=cut: ctx.tiny_text.encode()[:cut]), names=("c.toml",)))
    return P


# ---------------------------------------------------------------------------
# class safetensors: structural attacks on safetensors files. Each file is
# rebuilt from the parsed header, so that one thing at a time is wrong.


def st_mutations(b, tokens=False):
    """[(label, bytes, expect)] of one valid safetensors file (tokens: neox score's input file)."""
    n = struct.unpack("<Q", b[:8])[0]
    H = 8 + n
    entries, meta, data = st_parse(b)
    M = []

    def edit(fn, label, expect="error"):
        es = [(k, json.loads(json.dumps(e))) for k, e in entries]
        m = dict(meta) if meta is not None else None
        res = fn(es, m)
        if res is not None:
            es, m = res
        M.append((label, st_rebuild(es, m, data), expect))

    def same_length(new_header):
        return struct.pack("<Q", n) + new_header.ljust(n, b" ")[:n] + data

    for label, cut in [("empty", 0), ("4-bytes", 4), ("7-bytes", 7), ("length-only", 8), ("header-half", 8 + n // 2),
                       ("header-minus-1", H - 1), ("header-only", H), ("data-1-byte", H + 1),
                       ("data-half", H + len(data) // 2), ("last-byte-missing", len(b) - 1)]:
        M.append(("truncated-" + label, b[:cut], "error"))
    M.append(("extra-bytes-after-data", b + b"\0" * 64, "either"))
    M.append(("zero-filled", b"\0" * len(b), "error"))
    for label, v in [("0", 0), ("1", 1), ("minus-1", n - 1), ("plus-1", n + 1), ("file-size", len(b)),
                     ("past-end", len(b) + 1), ("2^32", 2**32), ("2^63", 2**63), ("2^64-1", 2**64 - 1)]:
        M.append(("header-length-" + label, struct.pack("<Q", v) + b[8:], "error"))
    M.append(("header-not-json", same_length(b"this is not JSON"), "error"))
    M.append(("header-json-array", same_length(b"[]"), "error"))
    M.append(("header-json-string", same_length(b'"tensors"'), "error"))
    M.append(("header-json-null", same_length(b"null"), "error"))
    M.append(("header-empty-object", same_length(b"{}"), "error"))
    M.append(("header-json-cut", same_length(b[8:8 + n // 2]), "error"))
    first = entries[0][0].encode()
    i = b.index(first, 8)
    M.append(("header-non-utf8", b[:i] + b"\xff" + b[i + 1:], "error"))
    M.append(("header-nul-byte", b[:i] + b"\0" + b[i + 1:], "error"))
    M.append(("header-nested-100000", st_join(b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}", data), "error"))
    dup = json.dumps(dict(entries[:1]), separators=(",", ":"))[1:-1]
    hdr = json.loads(b[8:H].decode())
    M.append(("duplicate-name", st_join(("{" + dup + "," + json.dumps(hdr, separators=(",", ":"))[1:]).encode(), data),
              "error"))
    e0 = entries[0][1]
    size0 = ST_SIZES.get(e0["dtype"], 4)
    other_float = {8: "I64", 4: "I32", 2: "I16"}.get(size0, "U8")
    if tokens:  # input_ids are I64: the same size in another kind is a float
        other_float = {8: "F64", 4: "F32", 2: "F16"}.get(size0, "U8")
    narrow = {8: "F32", 4: "F16", 2: "U8"}.get(size0, "F64")

    def set0(key, value, drop=False):
        def fn(es, m):
            if drop:
                del es[0][1][key]
            else:
                es[0][1][key] = value
        return fn

    edit(set0("dtype", "F128"), "dtype-unknown")
    edit(set0("dtype", None, True), "dtype-missing")
    edit(set0("dtype", 4), "dtype-number")
    edit(set0("dtype", other_float), "dtype-integer-same-size")
    edit(set0("dtype", narrow), "dtype-size-mismatch")
    edit(set0("dtype", "BOOL"), "dtype-bool")
    shape = e0["shape"]
    edit(set0("shape", [-1] + shape[1:]), "shape-negative")
    edit(set0("shape", [2**62, 2**62]), "shape-overflowing-product")
    edit(set0("shape", list(reversed(shape)) if len(shape) > 1 and shape[0] != shape[-1] else shape + [1]),
         "shape-transposed", "error")
    edit(set0("shape", [1] + shape), "shape-extra-dimension", "error")
    edit(set0("shape", []), "shape-scalar")
    edit(set0("shape", "abc"), "shape-string")
    edit(set0("shape", [1.5] + shape[1:]), "shape-float")
    edit(set0("shape", None, True), "shape-missing")
    s0, e0_ = e0["data_offsets"]
    edit(set0("data_offsets", [e0_, s0]), "offsets-reversed")
    edit(set0("data_offsets", [s0, len(data) + 8]), "offsets-past-end")
    edit(set0("data_offsets", [s0, 2**64 - 1]), "offsets-2^64-1")
    edit(set0("data_offsets", [-8, e0_]), "offsets-negative")
    edit(set0("data_offsets", [s0 + 0.5, e0_]), "offsets-float")
    edit(set0("data_offsets", ["0", str(e0_)]), "offsets-strings")
    edit(set0("data_offsets", [s0]), "offsets-one-number")
    edit(set0("data_offsets", None, True), "offsets-missing")
    if len(entries) > 1:
        def overlap(es, m):
            s1, e1 = es[1][1]["data_offsets"]
            es[1][1]["data_offsets"] = [s0, s0 + (e1 - s1)]
        edit(overlap, "offsets-overlap")

        def swap(es, m):
            es[0][1]["data_offsets"], es[1][1]["data_offsets"] = es[1][1]["data_offsets"], es[0][1]["data_offsets"]
        # (Between tensors of one size, a swap is a valid file of other values: nothing to detect.)
        s1, e1 = entries[1][1]["data_offsets"]
        if e1 - s1 != e0["data_offsets"][1] - e0["data_offsets"][0]:
            edit(swap, "offsets-swapped-between-tensors")

    def shift(es, m):
        for _, e in es:
            e["data_offsets"] = [e["data_offsets"][0] + 8, e["data_offsets"][1] + 8]
    edit(shift, "offsets-all-shifted")
    edit(lambda es, m: es.__setitem__(0, ("", es[0][1])), "name-empty")
    edit(lambda es, m: es.__setitem__(0, (es[0][0] + ".bogus", es[0][1])), "name-unknown")
    edit(lambda es, m: es.__setitem__(0, (es[0][0], 5)), "entry-not-an-object")
    edit(set0("bogus_field", 1), "entry-unknown-field", "either")
    last = entries[-1]
    M.append(("tensor-missing", st_rebuild(entries[:-1], meta, data[:last[1]["data_offsets"][0]]),
              "either" if tokens else "error"))
    M.append(("tensor-extra", st_rebuild(entries + [("extra.weight", {"dtype": "F32", "shape": [1],
                                                                      "data_offsets": [len(data), len(data) + 4]})],
                                         meta, data + f32([1.0])), "either"))
    edit(lambda es, m: (es, []), "metadata-array", "either")
    edit(lambda es, m: (es, {"format": 1}), "metadata-not-strings", "either")
    return M


def probes_safetensors(ctx):
    P = []
    model = read(os.path.join(ctx.hf, "model.safetensors"))
    hf_consumers = [
        ("score", score(), c_same_file("out.safetensors", lambda ctx: os.path.join(ctx.fx, "score.safetensors"))),
        ("generate", gen_hf(), c_stdout("gen_hf")),
        ("convert-from-hf", ["convert", "--from-hf", "hf", "--out", "o"],
         c_tensors("o/global_step0/model.safetensors",
                   lambda ctx: os.path.join(ctx.fx, "hf_import", "global_step0", "model.safetensors"))),
    ]
    for label, payload, expect in st_mutations(model):
        for cname, args, check in hf_consumers:
            P.append(Probe("safetensors/model:%s:%s" % (label, cname), "safetensors", args, expect=expect,
                           setup=s_hf(s_write("hf/model.safetensors", payload)), check=check,
                           names=("model.safetensors",), what="hf/model.safetensors: %s" % label))
    tokens = read(ctx.tokens)
    score_ok = c_same_file("out.safetensors", lambda ctx: os.path.join(ctx.fx, "score.safetensors"))
    for label, payload, expect in st_mutations(tokens, tokens=True):
        P.append(Probe("safetensors/tokens:%s" % label, "safetensors", score(), expect=expect,
                       setup=s_hf(s_write("tokens.safetensors", payload)), check=score_ok,
                       names=("tokens.safetensors",)))
    # Token files that are well formed but wrong for the model.
    V, T = ctx.hf_vocab, ctx.hf_positions
    ids = lambda vals: i64(vals)

    def tok(*tensors):
        return s_hf(s_write("tokens.safetensors", st_pack(list(tensors))))

    good_ids = [(7 * i + 3) % min(V, 250) for i in range(16)]
    for label, tensors, expect, names in [
        ("input_ids-f64", [("input_ids", "F64", [2, 8], struct.pack("<16d", *good_ids))], "error", ("input_ids",)),
        ("input_ids-i32", [("input_ids", "I32", [2, 8], struct.pack("<16i", *good_ids))], "either", ("input_ids",)),
        ("input_ids-beyond-vocab", [("input_ids", "I64", [2, 8], ids(good_ids[:15] + [V + 1000]))], "error",
         ("input_ids",)),
        ("input_ids-int64-max", [("input_ids", "I64", [2, 8], ids(good_ids[:15] + [2**63 - 1]))], "error",
         ("input_ids",)),
        ("input_ids-negative", [("input_ids", "I64", [2, 8], ids([-5] + good_ids[1:]))], "error", ("input_ids",)),
        ("input_ids-1d", [("input_ids", "I64", [16], ids(good_ids))], "either", ("input_ids",)),
        ("input_ids-3d", [("input_ids", "I64", [1, 2, 8], ids(good_ids))], "error", ("input_ids",)),
        ("input_ids-longer-than-positions", [("input_ids", "I64", [1, T + 8], ids([3] * (T + 8)))], "either",
         ("input_ids",)),
        ("input_ids-batch-0", [("input_ids", "I64", [0, 8], b"")], "either", ("input_ids",)),
        ("input_ids-length-0", [("input_ids", "I64", [2, 0], b"")], "either", ("input_ids",)),
        ("input_ids-missing", [("labels", "I64", [2, 8], ids(good_ids))], "error", ("input_ids",)),
        ("labels-other-shape", [("input_ids", "I64", [2, 8], ids(good_ids)),
                                ("labels", "I64", [2, 7], ids(good_ids[:14]))], "error", ("labels",)),
        ("labels-beyond-vocab", [("input_ids", "I64", [2, 8], ids(good_ids)),
                                 ("labels", "I64", [2, 8], ids(good_ids[:15] + [V + 7]))], "error", ("labels",)),
        ("labels-f32", [("input_ids", "I64", [2, 8], ids(good_ids)),
                        ("labels", "F32", [2, 8], f32([1.0] * 16))], "error", ("labels",)),
        ("only-input_ids", [("input_ids", "I64", [2, 8], ids(good_ids))], "ok", ()),
    ]:
        P.append(Probe("safetensors/tokens:%s" % label, "safetensors", score(), expect=expect, setup=tok(*tensors),
                       names=("tokens.safetensors",) + names))
    return P


# ---------------------------------------------------------------------------
# class idx: structural attacks on Megatron .idx/.bin datasets


def idx_mutations(idx, binb):
    """[(label, idx bytes, bin bytes, expect, what must be named)]."""
    code, sizes, pointers, doc_idx = idx_parse(idx)
    n, d = len(sizes), len(doc_idx)
    M = []

    def I(label, new_idx, expect="error", names=("t.idx",)):
        M.append((label, new_idx, binb, expect, names))

    def pack(**kw):
        a = dict(sizes=list(sizes), pointers=list(pointers), doc_idx=list(doc_idx), code=code)
        a.update(kw)
        return idx_pack(a.pop("sizes"), a.pop("pointers"), a.pop("doc_idx"), **a)

    for label, cut in [("0", 0), ("4", 4), ("9-magic-only", 9), ("17", 17), ("18", 18), ("26", 26), ("33", 33),
                       ("34-header-only", 34), ("mid-sizes", 34 + 2 * n), ("after-sizes", 34 + 4 * n),
                       ("after-pointers", 34 + 12 * n), ("last-8", len(idx) - 8), ("last-1", len(idx) - 1)]:
        I("truncated-" + label, idx[:cut])
    I("extra-byte", idx + b"\0")
    I("magic-wrong", b"MMIDIDX\x00\x01" + idx[9:])
    I("magic-lowercase", b"mmididx\x00\x00" + idx[9:])
    for v in (0, 2, 2**63):
        I("version-%d" % v, idx[:9] + struct.pack("<Q", v) + idx[17:])
    for c in (0, 1, 2, 3, 5, 6, 7, 9, 255):
        I("dtype-code-%d" % c, idx[:17] + bytes([c]) + idx[18:])
    I("dtype-code-4-int32-over-uint16-data", idx[:17] + bytes([4]) + idx[18:], "error", ("t.bin",))
    for label, v in [("plus-1", n + 1), ("minus-1", n - 1), ("0", 0), ("2^61", 2**61), ("2^63", 2**63),
                     ("2^64-1", 2**64 - 1)]:
        I("count-" + label, idx[:18] + struct.pack("<Q", v) + idx[26:])
    for label, v in [("0", 0), ("plus-1", d + 1), ("2^61", 2**61), ("2^64-1", 2**64 - 1)]:
        I("doc-count-" + label, idx[:26] + struct.pack("<Q", v) + idx[34:])
    I("size-negative", pack(sizes=[-1] + sizes[1:]))
    I("size-int32-max", pack(sizes=[2**31 - 1] + sizes[1:]), "error", ("t.bin",))
    I("sizes-sum-past-bin", pack(sizes=[s + 1 for s in sizes]), "error", ("t.bin",))
    I("pointer-negative", pack(pointers=[-2] + pointers[1:]))
    I("pointer-past-bin", pack(pointers=pointers[:-1] + [len(binb) + 2]), "error", ("t.bin",))
    I("pointer-overflowing-end", pack(pointers=pointers[:-1] + [2**63 - 4]), "error", ("t.bin",))
    I("pointers-all-zero", pack(pointers=[0] * n), "either")
    I("pointers-reversed", pack(pointers=list(reversed(pointers)), sizes=list(reversed(sizes))), "either")
    I("pointer-odd-offset", pack(pointers=[1] + pointers[1:], sizes=[max(0, sizes[0] - 1)] + sizes[1:]), "either")
    I("doc_idx-first-not-0", pack(doc_idx=[1] + doc_idx[1:]))
    I("doc_idx-decreasing", pack(doc_idx=doc_idx[:2] + [0] + doc_idx[3:]) if d > 3 else pack(doc_idx=[0, 0]))
    I("doc_idx-last-not-count", pack(doc_idx=doc_idx[:-1] + [n - 1]))
    I("doc_idx-last-past-count", pack(doc_idx=doc_idx[:-1] + [n + 5]))
    I("doc_idx-int64-max", pack(doc_idx=doc_idx[:-1] + [2**63 - 1]))
    I("doc_idx-negative", pack(doc_idx=[0, -3] + doc_idx[2:]))
    I("empty-dataset", idx_pack([], [], [0], code=code), "error", (("t", "empty", "no"),))
    for label, newbin, expect in [("bin-empty", b"", "error"), ("bin-half", binb[:len(binb) // 2], "error"),
                                  ("bin-minus-1", binb[:-1], "error"), ("bin-extra-bytes", binb + b"\0" * 64,
                                                                         "either"),
                                  ("bin-odd-size", binb + b"\0", "either")]:
        M.append((label, idx, newbin, expect, ("t.bin",)))
    big = bytearray(binb)
    struct.pack_into("<H", big, 2 * 5, 60000)
    M.append(("bin-token-60000-beyond-vocab", idx, bytes(big), "error", (("t.bin", "60000"),)))
    return M


def probes_idx(ctx):
    P = []
    idx, binb = read(ctx.data + ".idx"), read(ctx.data + ".bin")
    consumers = [
        ("data-inspect", ["data", "inspect", "ds/t"]),
        ("train", train(ctx, "plugins.options.mmap.data_path=ds/t", "training.train_iters=2")),
        ("data-merge", ["data", "merge", "--input", "ds/t,ds/t", "--output-prefix", "m"]),
    ]
    for label, new_idx, new_bin, expect, names in idx_mutations(idx, binb):
        for cname, args in consumers:
            e = expect
            if label in ("bin-token-60000-beyond-vocab", "empty-dataset") and cname != "train":
                e = "either"  # only training knows the vocabulary; an empty dataset is one to inspect
            P.append(Probe("idx/%s:%s" % (label, cname), "idx", args, expect=e,
                           setup=s_chain(s_write("ds/t.idx", new_idx), s_write("ds/t.bin", new_bin)), names=names,
                           what="a dataset with %s" % label))
    return P


# ---------------------------------------------------------------------------
# class tokenizer: tokenizer.json, vocab.json and merges.txt


def json_mutations(obj, edits):
    """[(label, bytes)] from edits: (label, fn(obj) -> replacement or None)."""
    out = []
    for label, fn in edits:
        o = json.loads(json.dumps(obj))
        r = fn(o)
        out.append((label, r if isinstance(r, bytes) else json.dumps(o if r is None else r).encode()))
    return out


def probes_tokenizer(ctx):
    P = []
    if ctx.tok_json:
        raw = read(ctx.tok_json)
        j = json.loads(raw)
        n = len(raw)
        vocab_items = list(j["model"]["vocab"].items())
        edits = [
            ("empty", lambda o: b""), ("one-byte", lambda o: raw[:1]), ("truncated-10pc", lambda o: raw[:n // 10]),
            ("truncated-half", lambda o: raw[:n // 2]), ("truncated-last-byte", lambda o: raw[:-1]),
            ("not-json", lambda o: b"tokenizer"), ("top-level-array", lambda o: []), ("top-level-string", lambda o: "x"),
            ("top-level-null", lambda o: b"null"), ("non-utf8-byte", lambda o: raw.replace(b'"BPE"', b'"B\xffE"', 1)),
            ("model-missing", lambda o: o.pop("model") and None), ("model-null", lambda o: o.__setitem__("model", None)),
            ("model-type-WordPiece", lambda o: o["model"].__setitem__("type", "WordPiece")),
            ("model-type-bogus", lambda o: o["model"].__setitem__("type", "Bogus")),
            ("model-type-number", lambda o: o["model"].__setitem__("type", 3)),
            ("vocab-missing", lambda o: o["model"].pop("vocab") and None),
            ("vocab-array", lambda o: o["model"].__setitem__("vocab", [k for k, _ in vocab_items])),
            ("vocab-empty", lambda o: o["model"].__setitem__("vocab", {})),
            ("vocab-id-string", lambda o: o["model"]["vocab"].__setitem__(vocab_items[5][0], "5")),
            ("vocab-id-negative", lambda o: o["model"]["vocab"].__setitem__(vocab_items[5][0], -5)),
            ("vocab-id-2^40", lambda o: o["model"]["vocab"].__setitem__(vocab_items[5][0], 2**40)),
            ("vocab-id-float", lambda o: o["model"]["vocab"].__setitem__(vocab_items[5][0], 5.5)),
            ("vocab-id-duplicate", lambda o: o["model"]["vocab"].__setitem__(vocab_items[5][0], vocab_items[6][1])),
            ("merges-missing", lambda o: o["model"].pop("merges") and None),
            ("merges-object", lambda o: o["model"].__setitem__("merges", {"a": "b"})),
            ("merges-numbers", lambda o: o["model"].__setitem__("merges", [1, 2, 3])),
            ("merge-unknown-token", lambda o: o["model"]["merges"].insert(0, ["\u2603", "\u2604"])),
            ("merge-three-parts", lambda o: o["model"]["merges"].insert(0, "a b c")),
            ("merge-one-part", lambda o: o["model"]["merges"].insert(0, ["a"])),
            ("added_tokens-object", lambda o: o.__setitem__("added_tokens", {"id": 0})),
            ("added_token-id-2^40", lambda o: o["added_tokens"][0].__setitem__("id", 2**40)),
            ("added_token-id-negative", lambda o: o["added_tokens"][0].__setitem__("id", -1)),
            ("added_token-content-missing", lambda o: o["added_tokens"][0].pop("content") and None),
            ("pre_tokenizer-bogus", lambda o: o.__setitem__("pre_tokenizer", {"type": "Bogus"})),
            ("normalizer-bogus", lambda o: o.__setitem__("normalizer", {"type": "Bogus"})),
            ("decoder-bogus", lambda o: o.__setitem__("decoder", {"type": "Bogus"})),
            ("post_processor-bogus", lambda o: o.__setitem__("post_processor", {"type": "Bogus"})),
            ("unk_token-not-in-vocab", lambda o: o["model"].__setitem__("unk_token", "<nope>")),
            ("byte_fallback-without-byte-tokens", lambda o: o["model"].__setitem__("byte_fallback", True)),
            ("nested-100000", lambda o: b'{"model":' + b"[" * 100000 + b"]" * 100000 + b"}"),
        ]
        either = {"vocab-id-duplicate", "merge-unknown-token", "unk_token-not-in-vocab", "added_token-id-negative",
                  "byte_fallback-without-byte-tokens", "merges-missing", "added_token-id-2^40"}
        for label, payload in json_mutations(j, edits):
            expect = "either" if label in either else "error"
            P.append(Probe("tokenizer/tokenizer.json:%s:tokenize" % label, "tokenizer",
                           ["tokenize", "--tokenizer-type", "HFTokenizer", "--vocab-file", "tok.json", "--text",
                            "hello world"], expect=expect, setup=s_write("tok.json", payload), names=("tok.json",)))
            if label in ("truncated-half", "vocab-array", "model-type-bogus", "merges-numbers", "non-utf8-byte",
                         "vocab-id-2^40", "added_token-id-2^40"):
                P.append(Probe("tokenizer/tokenizer.json:%s:preprocess" % label, "tokenizer",
                               ["preprocess", "--input", "a.txt", "--output-prefix", "p", "--tokenizer-type",
                                "HFTokenizer", "--vocab-file", "tok.json"], expect=expect,
                               setup=s_chain(s_write("tok.json", payload), s_write("a.txt", "hello world\n")),
                               names=("tok.json",)))
                P.append(Probe("tokenizer/tokenizer.json:%s:train" % label, "tokenizer",
                               train(ctx, "tokenizer.type=HFTokenizer", "tokenizer.vocab_file=tok.json",
                                     "model.vocab_size=1024", "training.train_iters=1"), expect=expect,
                               setup=s_write("tok.json", payload), names=("tok.json",)))
    if ctx.gpt2_vocab:
        vraw, mraw = read(ctx.gpt2_vocab), read(ctx.gpt2_merges)
        v = json.loads(vraw)
        items = list(v.items())
        args = ["tokenize", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", "vocab.json", "--merge-file",
                "merges.txt", "--text", "hello world"]
        vedits = [
            ("empty", lambda o: b""), ("truncated-half", lambda o: vraw[:len(vraw) // 2]),
            ("not-json", lambda o: b"vocab"), ("array", lambda o: [k for k, _ in items]),
            ("id-string", lambda o: o.__setitem__(items[5][0], "5")), ("id-negative", lambda o: o.__setitem__(
                items[5][0], -1)), ("id-2^40", lambda o: o.__setitem__(items[5][0], 2**40)),
            ("id-duplicate", lambda o: o.__setitem__(items[5][0], items[6][1])), ("empty-object", lambda o: {}),
            ("non-utf8", lambda o: vraw.replace(b'"!"', b'"\xff"', 1)),
        ]
        for label, payload in json_mutations(v, vedits):
            P.append(Probe("tokenizer/vocab.json:%s" % label, "tokenizer", args, expect="either" if label in (
                "id-duplicate",) else "error", setup=s_chain(s_write("vocab.json", payload),
                                                             s_copy("gpt2_merges", "merges.txt")),
                           names=("vocab.json",)))
        lines = mraw.split(b"\n")
        for label, payload, expect in [
            ("empty", b"", "either"), ("no-version-line", b"\n".join(lines[1:]), "either"),
            ("one-token-line", mraw + b"\nlonely\n", "error"), ("three-token-line", mraw + b"\na b c\n", "error"),
            ("unknown-tokens", mraw + b"\n\xe2\x98\x83 \xe2\x98\x84\n", "either"),
            ("non-utf8", mraw.replace(lines[1], b"\xff\xfe", 1), "error"),
            ("binary-garbage", bytes((i * 7919 + 13) % 256 for i in range(4000)), "error"),
            ("line-of-1MB", mraw + b"\n" + b"a" * (1 << 20) + b" b\n", "either"),
            ("crlf", mraw.replace(b"\n", b"\r\n"), "either"),
        ]:
            P.append(Probe("tokenizer/merges.txt:%s" % label, "tokenizer", args, expect=expect,
                           setup=s_chain(s_copy("gpt2_vocab", "vocab.json"), s_write("merges.txt", payload)),
                           names=("merges.txt",)))
    return P


# ---------------------------------------------------------------------------
# class hfconfig: config.json of Hugging Face directories


def probes_hfconfig(ctx):
    P = []
    raw = read(os.path.join(ctx.hf, "config.json"))
    j = json.loads(raw)
    consumers = [("score", score()), ("convert-from-hf", ["convert", "--from-hf", "hf", "--out", "o"])]
    M = []  # (label, payload, expect, key to name)

    def put(label, key, value, expect="error"):
        o = json.loads(raw)
        if value is DEL:
            o.pop(key, None)
        else:
            o[key] = value
        M.append((label, json.dumps(o, indent=2).encode(), expect, key))

    for label, payload in [("empty", b""), ("truncated-half", raw[:len(raw) // 2]), ("not-json", b"config"),
                           ("top-level-array", b"[]"), ("top-level-null", b"null"),
                           ("non-utf8", raw.replace(b"gpt_neox", b"gpt_\xffeox", 1)),
                           ("nested-100000", b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}")]:
        M.append((label, payload, "error", None))
    M.append(("utf8-bom", b"\xef\xbb\xbf" + raw, "either", None))
    M.append(("nan-literal", raw.replace(b'"layer_norm_eps": 1e-05', b'"layer_norm_eps": NaN'), "error",
              "layer_norm_eps"))
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        put("%s-missing" % key, key, DEL)
        for label, value in [("string", "64"), ("float", 64.5), ("bool", True), ("null", None), ("array", [64]),
                             ("zero", 0), ("negative", -4), ("2^31", 2**31), ("2^63", 2**63), ("1e9", 1000000000)]:
            put("%s-%s" % (key, label), key, value)
    for key in ("intermediate_size", "max_position_embeddings"):
        put("%s-missing" % key, key, DEL, "either")
        for label, value in [("string", "64"), ("zero", 0), ("negative", -1), ("2^40", 2**40)]:
            # intermediate_size 0 is 4 * hidden_size in neox's own configs, as the weights have it here.
            put("%s-%s" % (key, label), key, value, "either" if (key, label) == ("intermediate_size", "zero") else
                "error")
    for key in ("layer_norm_eps", "initializer_range"):
        put("%s-missing" % key, key, DEL, "either")
        for label, value in [("string", "1e-5"), ("negative", -1.0), ("bool", True)]:
            put("%s-%s" % (key, label), key, value, "error" if key == "layer_norm_eps" or label != "negative" else
                "either")
    for key in ("use_parallel_residual", "tie_word_embeddings", "attention_bias"):
        put("%s-missing" % key, key, DEL, "either")
        put("%s-string" % key, key, "true")
        put("%s-number" % key, key, 1)
    put("hidden_size-not-divisible-by-heads", "hidden_size", j["hidden_size"] + 1)
    put("vocab_size-smaller-than-weights", "vocab_size", j["vocab_size"] // 2)
    put("vocab_size-larger-than-weights", "vocab_size", j["vocab_size"] * 2)
    put("num_hidden_layers-more-than-weights", "num_hidden_layers", j["num_hidden_layers"] + 1)
    put("num_hidden_layers-fewer-than-weights", "num_hidden_layers", j["num_hidden_layers"] - 1)
    put("model_type-llama", "model_type", "llama")
    put("model_type-number", "model_type", 7)
    put("hidden_act-relu", "hidden_act", "relu")
    put("rope_scaling-linear", "rope_scaling", {"type": "linear", "factor": 2.0})
    for label, rp in [("rope_type-yarn", {"rope_type": "yarn", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
                      ("partial_rotary_factor-0", {"rope_type": "default", "rope_theta": 10000.0,
                                                   "partial_rotary_factor": 0.0}),
                      ("partial_rotary_factor-1.5", {"rope_type": "default", "rope_theta": 10000.0,
                                                     "partial_rotary_factor": 1.5}),
                      ("rope_theta-negative", {"rope_type": "default", "rope_theta": -1.0,
                                               "partial_rotary_factor": 0.25}),
                      ("rope_parameters-string", "default")]:
        put(label, "rope_parameters", rp)
    for cname, args in consumers:
        for label, payload, expect, key in M:
            P.append(Probe("hfconfig/%s:%s" % (label, cname), "hfconfig", args, expect=expect,
                           setup=s_hf(s_write("hf/config.json", payload)),
                           names=("config.json",) + ((key,) if key else ())))
    # generate reads the token ids of config.json too.
    for label, value in [("4294967328", 4294967328), ("-5", -5), ("beyond-vocab", j["vocab_size"] + 10**6),
                         ("string", "2"), ("2^63", 2**63), ("array-with-huge", [2, 4294967328])]:
        o = dict(j, eos_token_id=value)
        # An id beyond the vocabulary that fits its type is useless but not wrong; one that does not fit is.
        P.append(Probe("hfconfig/eos_token_id-%s:generate" % label, "hfconfig", gen_hf(),
                       expect="either" if label in ("-5", "beyond-vocab") else "error",
                       setup=s_hf(s_write("hf/config.json", json.dumps(o))), names=("eos_token_id",)))
    # Sharded weights: an index naming the shards.
    model = read(os.path.join(ctx.hf, "model.safetensors"))
    entries, meta, data = st_parse(model)
    half = len(entries) // 2

    def shard(es):
        base = es[0][1]["data_offsets"][0]
        end = es[-1][1]["data_offsets"][1]
        return st_rebuild([(k, dict(e, data_offsets=[e["data_offsets"][0] - base, e["data_offsets"][1] - base]))
                           for k, e in es], meta, data[base:end])

    shards = {"model-00001-of-00002.safetensors": shard(entries[:half]),
              "model-00002-of-00002.safetensors": shard(entries[half:])}
    weight_map = {k: "model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors"
                  for i, (k, _) in enumerate(entries)}

    def sharded(index, files=shards):

        def setup(ctx, d):
            os.unlink(os.path.join(d, "hf", "model.safetensors"))
            for f, b in files.items():
                write(os.path.join(d, "hf", f), b)
            write(os.path.join(d, "hf", "model.safetensors.index.json"), index if isinstance(index, bytes) else
                  json.dumps(index))

        return s_hf(setup)

    score_ok = c_same_file("out.safetensors", lambda ctx: os.path.join(ctx.fx, "score.safetensors"))
    idx_name = "model.safetensors.index.json"
    first_shard = "model-00001-of-00002.safetensors"
    for label, setup, expect, names in [
        ("valid", sharded({"weight_map": weight_map}), "ok", ()),
        ("weight_map-empty", sharded({"weight_map": {}}), "error", (idx_name,)),
        ("weight_map-missing", sharded({"metadata": {}}), "error", (idx_name,)),
        ("weight_map-array", sharded({"weight_map": []}), "error", (idx_name,)),
        ("index-not-json", sharded(b"index"), "error", (idx_name,)),
        ("index-empty", sharded(b""), "error", (idx_name,)),
        ("shard-missing", sharded({"weight_map": weight_map}, {first_shard: shards[first_shard]}), "error",
         ("model-00002-of-00002.safetensors",)),
        ("shard-path-traversal", sharded({"weight_map": dict(weight_map, **{entries[0][0]: "../../etc/passwd"})}),
         "error", ("passwd",)),
        ("shard-absolute-path", sharded({"weight_map": dict(weight_map, **{entries[0][0]: "/etc/passwd"})}),
         "error", ("passwd",)),
        ("shard-name-not-string", sharded({"weight_map": dict(weight_map, **{entries[0][0]: 5})}), "error",
         (idx_name,)),
        ("tensor-in-wrong-shard", sharded({"weight_map": dict(weight_map, **{entries[0][0]:
                                                                              "model-00002-of-00002.safetensors"})}),
         "either", (entries[0][0],)),
        ("tensor-missing-from-map", sharded({"weight_map": {k: v for k, v in weight_map.items()
                                                            if k != entries[0][0]}}), "either", (entries[0][0],)),
        ("shard-is-a-directory", s_chain(sharded({"weight_map": weight_map}),
                                         s_node("hf/" + first_shard, "dir")), "error", (first_shard,)),
        ("shard-is-a-fifo", s_chain(sharded({"weight_map": weight_map}), s_node("hf/" + first_shard, "fifo")),
         "error", (first_shard,)),
    ]:
        P.append(Probe("hfconfig/sharded:%s:score" % label, "hfconfig", score(), expect=expect, setup=setup,
                       check=score_ok, names=names, timeout=TIMEOUT_BLOCKING))
    return P


DEL = object()


# ---------------------------------------------------------------------------
# class checkpoint: each file of the newest checkpoint missing, truncated or
# corrupted. A save directory falls back to the previous checkpoint with a
# warning naming what is wrong (or refuses, naming it); never uses corrupt
# weights or a state that disagrees with them.


def flip_bit(rel, where, bit):
    """Flips one bit of a float in the data of a safetensors file: where = first, middle or last."""

    def edit(ctx, d):
        path = os.path.join(d, rel)
        b = bytearray(read(path))
        start = 8 + struct.unpack("<Q", bytes(b[:8]))[0]
        count = (len(b) - start) // 4
        i = {"first": 0, "middle": count // 2, "last": count - 1}[where]
        v = struct.unpack_from("<I", b, start + 4 * i)[0] ^ (1 << bit)
        struct.pack_into("<I", b, start + 4 * i, v)
        write(path, bytes(b))

    return edit


def set_tensor(rel, name_part, value, index=0):
    """Sets element `index` of the first F32 tensor whose name contains name_part (exactly, if it is a full name)."""

    def edit(ctx, d):
        path = os.path.join(d, rel)
        entries, meta, data = st_parse(read(path))
        names = [k for k, _ in entries]
        name = name_part if name_part in names else next(k for k in names if name_part in k and (
            name_part != "exp_avg" or "sq" not in k))
        e = dict(entries)[name]
        data = bytearray(data)
        struct.pack_into("<f", data, e["data_offsets"][0] + 4 * index, value)
        write(path, st_rebuild(entries, meta, bytes(data)))

    return edit


def state_edit(fn):
    return s_json("ck/global_step4/state.json", fn)


def ck_mutations(ctx):
    """(label, edit of d/ck, what the error or warning names, kind).

    kind: weights     step 4's weights are unusable: a save directory falls back to step 3 (with a warning
                      naming it) or the command refuses
          state       step 4's training state is unusable: resume falls back or refuses; generate and
                      convert may still use step 4's weights
          config      step 4's config.toml is unusable: generate/convert fall back or refuse; a resume
                      (which has the run's config) may use step 4
          latest      `latest` is unusable: the newest complete checkpoint (4) is used
          latest3     `latest` names global_step3: step 3 is used
          renamed     a directory name disagrees with the iteration inside: either step is real; a resume
                      must not mix them up
    """
    G4 = "ck/global_step4/"
    model, opt, state, conf = G4 + "model.safetensors", G4 + "optimizer.safetensors", G4 + "state.json", \
        G4 + "config.toml"
    mlen = os.path.getsize(os.path.join(ctx.ck, "global_step4", "model.safetensors"))
    mhdr = 8 + struct.unpack("<Q", read(os.path.join(ctx.ck, "global_step4", "model.safetensors"))[:8])[0]
    M = []

    def add(label, edit, names, kind):
        M.append((label, edit, names, kind))

    def cut(rel, n):
        return s_edit(rel, lambda b: b[:n] if n >= 0 else b[:len(b) + n])

    def header_digit_flip(ctx, d):
        path = os.path.join(d, model)
        b = read(path)
        i = b.index(b'"shape":[384') + len(b'"shape":[38')
        write(path, b[:i] + bytes([b[i] ^ 1]) + b[i + 1:])

    for label, edit in [
        ("missing", s_node(model, "missing")), ("empty", cut(model, 0)), ("truncated-8", cut(model, 8)),
        ("truncated-header", cut(model, mhdr // 2)), ("truncated-data-half", cut(model, mhdr + (mlen - mhdr) // 2)),
        ("truncated-last-byte", cut(model, -1)), ("extra-bytes", s_edit(model, lambda b: b + b"\0" * 64)),
        ("zero-filled", s_edit(model, lambda b: b"\0" * len(b))),
        ("bitflip-exponent-first-float", flip_bit(model, "first", 30)),
        ("bitflip-mantissa-lsb-middle-float", flip_bit(model, "middle", 0)),
        ("bitflip-sign-last-float", flip_bit(model, "last", 31)), ("bitflip-in-header-shape", header_digit_flip),
        ("nan-weight", set_tensor(model, "gpt_neox.final_layer_norm.weight", float("nan"))),
        ("inf-weight", set_tensor(model, "gpt_neox.final_layer_norm.weight", float("inf"))),
        ("step3-weights-copied-in", lambda ctx, d: copy(os.path.join(ctx.ck, "global_step3", "model.safetensors"),
                                                        os.path.join(d, model))),
        ("fifo", s_node(model, "fifo")), ("directory", s_node(model, "dir")),
    ]:
        add("model.safetensors-" + label, edit, ("global_step4", "model.safetensors"), "weights")
    for label, edit in [
        ("missing", s_node(opt, "missing")), ("truncated-half", s_edit(opt, lambda b: b[:len(b) // 2])),
        ("bitflip-exponent", flip_bit(opt, "middle", 30)),
        ("negative-exp_avg_sq", set_tensor(opt, "exp_avg_sq", -1.0, 7)),
        ("nan-exp_avg", set_tensor(opt, "exp_avg", float("nan"), 7)),
        ("step3-state-copied-in", lambda ctx, d: copy(os.path.join(ctx.ck, "global_step3", "optimizer.safetensors"),
                                                      os.path.join(d, opt))),
        ("metadata-optimizer-sgd", s_edit(opt, lambda b: b.replace(b'"optimizer":"adamw"', b'"optimizer":"sgdxx"'))),
        ("fifo", s_node(opt, "fifo")),
    ]:
        add("optimizer.safetensors-" + label, edit, ("global_step4", "optimizer.safetensors"), "state")
    sn = ("global_step4", "state.json")
    for label, edit, kind in [
        ("missing", s_node(state, "missing"), "weights"), ("empty", cut(state, 0), "weights"),
        ("not-json", s_edit(state, lambda b: b"{ not json"), "weights"),
        ("truncated-half", s_edit(state, lambda b: b[:len(b) // 2]), "weights"),
        ("fifo", s_node(state, "fifo"), "weights"),
        ("iteration-999999", state_edit(lambda o: o.__setitem__("iteration", 999999)), "state"),
        ("iteration-5", state_edit(lambda o: o.__setitem__("iteration", 5)), "state"),
        ("iteration-3", state_edit(lambda o: o.__setitem__("iteration", 3)), "state"),
        ("iteration-0", state_edit(lambda o: o.__setitem__("iteration", 0)), "state"),
        ("iteration-negative", state_edit(lambda o: o.__setitem__("iteration", -1)), "state"),
        ("iteration-string", state_edit(lambda o: o.__setitem__("iteration", "4")), "state"),
        ("iteration-2^64", state_edit(lambda o: o.__setitem__("iteration", 2**64)), "state"),
        ("iteration-missing", state_edit(lambda o: o.pop("iteration") and None), "state"),
        ("data_positions-missing", state_edit(lambda o: o.pop("data_positions") and None), "state"),
        ("data_positions-train-1e15", state_edit(lambda o: o["data_positions"].__setitem__("train", 10**15)),
         "state"),
        ("data_positions-train-negative", state_edit(lambda o: o["data_positions"].__setitem__("train", -8)),
         "state"),
        ("data_positions-train-0", state_edit(lambda o: o["data_positions"].__setitem__("train", 0)), "state"),
        ("data_positions-train-plus-1", state_edit(lambda o: o["data_positions"].__setitem__(
            "train", o["data_positions"]["train"] + 1)), "state"),
        ("data_positions-array", state_edit(lambda o: o.__setitem__("data_positions", [8])), "state"),
        ("format_version-999", state_edit(lambda o: o.__setitem__("format_version", 999)), "state"),
        ("optimizer-sgd", state_edit(lambda o: o.__setitem__("optimizer", "sgd")), "state"),
        ("rng_state-garbage", state_edit(lambda o: o.__setitem__("rng_state", "garbage")), "state"),
        ("rng_state-missing", state_edit(lambda o: o.pop("rng_state") and None), "state"),
    ]:
        add("state.json-" + label, edit, sn, kind)
    cn = ("global_step4", "config.toml")
    add("config.toml-missing", s_node(conf, "missing"), cn, "weights")
    add("config.toml-not-toml", s_edit(conf, lambda b: b"[model\nhidden_size = \n"), cn, "config")
    add("config.toml-other-model", s_edit(conf, lambda b: re.sub(rb"hidden_size = \d+", b"hidden_size = 64", b)), cn,
        "config")
    ln = ("latest",)
    for label, content in [("missing", None), ("garbage", b"hello\n"), ("global_step99", b"global_step99\n"),
                           ("dot-dot", b"../../../etc\n"), ("empty", b""), ("non-utf8", b"global_step\xff\n")]:
        edit = s_node("ck/latest", "missing") if content is None else s_write("ck/latest", content)
        add("latest-" + label, edit, ln, "latest")
    add("latest-directory", s_node("ck/latest", "dir"), ln, "latest")
    add("latest-fifo", s_node("ck/latest", "fifo"), ln, "latest")
    add("latest-global_step3", s_write("ck/latest", "global_step3\n"), ln, "latest3")
    add("global_step4-empty-directory", lambda ctx, d: [shutil.rmtree(os.path.join(d, "ck", "global_step4")),
                                                        os.makedirs(os.path.join(d, "ck", "global_step4"))],
        ("global_step4",), "weights")
    add("global_step4-a-file", lambda ctx, d: [shutil.rmtree(os.path.join(d, "ck", "global_step4")),
                                               write(os.path.join(d, "ck", "global_step4"), "x")], ("global_step4",),
        "weights")
    add("stray-tmp-directory", s_write("ck/.tmp-global_step5-999999/model.safetensors", "junk"), (), "latest")
    add("stray-empty-global_step5", lambda ctx, d: os.makedirs(os.path.join(d, "ck", "global_step5")), (), "latest")
    add("global_step3-renamed-global_step5", lambda ctx, d: [
        os.rename(os.path.join(d, "ck", "global_step3"), os.path.join(d, "ck", "global_step5")),
        write(os.path.join(d, "ck", "latest"), "global_step5\n")], ("global_step5",), "renamed")
    add("global_step4-renamed-global_step7", lambda ctx, d: [
        os.rename(os.path.join(d, "ck", "global_step4"), os.path.join(d, "ck", "global_step7")),
        write(os.path.join(d, "ck", "latest"), "global_step7\n")], ("global_step7",), "renamed")
    return M


def c_tensors_any(rel, refs):
    """exit 0: d/rel must equal one of the reference files refs(ctx)."""

    def check(ctx, d, r):
        path = os.path.join(d, rel)
        if not os.path.isfile(path):
            return "%s was not written" % rel
        diffs = [tensors_differ(p, path) for p in refs(ctx)]
        if all(diffs):
            return "%s: %s" % (rel, diffs[0])
        return None

    return check


def finite_problem(path):
    """None when every F32 value of a safetensors file is finite."""
    try:
        entries, _, data = st_parse(read(path))
        for k, e in entries:
            if e["dtype"] != "F32":
                continue
            a, b = e["data_offsets"]
            for x in struct.unpack("<%df" % ((b - a) // 4), data[a:b]):
                if x != x or x in (float("inf"), float("-inf")):
                    return "%s holds a non-finite value in %s" % (os.path.basename(path), k)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        return "%s: unreadable: %s" % (os.path.basename(path), e)
    return None


def k_finite_checkpoints(rel="ck"):
    """keep: the command wrote no checkpoint with non-finite weights or optimizer state."""

    def keep(ctx, d, r):
        base = os.path.join(d, rel)
        if not os.path.isdir(base):
            return None
        for g in sorted(os.listdir(base)):
            for f in ("model.safetensors", "optimizer.safetensors"):
                p = os.path.join(base, g, f)
                if g.startswith("global_step") and os.path.isfile(p) and written(d, r, os.path.join(rel, g, f)):
                    problem = finite_problem(p)
                    if problem:
                        return "%s/%s: %s" % (rel, g, problem)
        return None

    return keep


def probes_checkpoint(ctx):
    P = []
    hf = lambda k: os.path.join(ctx.fx, "hf_step%d" % k, "model.safetensors")
    for label, edit, names, kind in ck_mutations(ctx):
        setup = s_chain(s_copy("ck", "ck"), edit)
        t = TIMEOUT_BLOCKING if "fifo" in label else TIMEOUT
        # Resume from the save directory: the result must be the uninterrupted run's step 6.
        resume_warn = kind in ("weights", "state")
        P.append(Probe("checkpoint/%s:train-resume" % label, "checkpoint", train(ctx, "training.load=ck"),
                       expect="ok" if kind in ("latest", "latest3") else "either", setup=setup, names=names,
                       check=all_of(c_ckpt("ck", 6), c_stderr_names(*names) if resume_warn else None),
                       keep=k_finite_checkpoints(), timeout=t,
                       what="resume from a save directory whose newest checkpoint has %s" % label))
        steps = {"weights": (3,), "state": (3, 4), "config": (3,), "latest": (4,), "latest3": (3,),
                 "renamed": (3, 4)}[kind]
        gen_warn = kind in ("weights", "config") and names
        P.append(Probe("checkpoint/%s:generate" % label, "checkpoint", gen_ck(), expect="ok" if kind in (
            "latest", "latest3") else "either", setup=setup, names=names, timeout=t,
                       check=all_of(c_stdout_in(*["gen%d" % k for k in steps]),
                                    c_stderr_names(*names) if gen_warn else None)))
        P.append(Probe("checkpoint/%s:convert--to-hf" % label, "checkpoint", ["convert", "--to-hf", "ck", "--out", "o"],
                       expect="ok" if kind in ("latest", "latest3") else "either", setup=setup, names=names,
                       timeout=t, check=all_of(c_tensors_any("o/model.safetensors", lambda ctx, s=steps: [
                           hf(k) for k in s]), c_stderr_names(*names) if gen_warn else None)))
        if kind == "weights" and label.startswith("model."):
            # Asked for that checkpoint by name: no fall-back, an error.
            P.append(Probe("checkpoint/%s:generate-global_step4" % label, "checkpoint", gen_ck("ck/global_step4"),
                           setup=setup, names=names, timeout=t))
            P.append(Probe("checkpoint/%s:train-load-global_step4" % label, "checkpoint",
                           train(ctx, "training.load=ck/global_step4"), setup=setup, names=names, timeout=t,
                           keep=k_finite_checkpoints()))
    # NaN goes on: a non-finite loss stops the run naming the step; no checkpoint holds NaN.
    for label, value in [("nan", float("nan")), ("inf", float("inf"))]:
        P.append(Probe("checkpoint/finetune-from-hf-with-%s-weight" % label, "checkpoint",
                       train(ctx, "training.load=hf:hfbad", "training.finetune=true"),
                       setup=s_chain(s_copy(os.path.join(ctx.fx, "hf_step4"), "hfbad"),
                                     set_tensor("hfbad/model.safetensors", "gpt_neox.final_layer_norm.weight", value)),
                       names=("step",), keep=k_finite_checkpoints(),
                       what="a non-finite loss stops the run with an error naming the step"))
    P.append(Probe("checkpoint/lr-1.0-without-clipping", "checkpoint",
                   train(ctx, "optimizer.lr=1.0", "optimizer.gradient_clipping=0.0", "training.train_iters=40",
                         "training.checkpoint_factor=10"), expect="either", names=("step",),
                   keep=k_finite_checkpoints(), what="diverging training: finite checkpoints, or an error naming the "
                   "step"))
    return P


# ---------------------------------------------------------------------------
# class sigkill: SIGKILL at moments of a checkpoint save; the resume must
# load the previous complete checkpoint and end bit-identical to the
# uninterrupted run (fixtures/kref).


def save_state(base, step):
    """What a poll of the save directory sees of the save of `step`."""
    st = {"tmp": None, "tmp_files": set(), "final": False, "latest": None, "latest_tmp": False}
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return st
    for n in names:
        if n.startswith(".tmp-global_step%d-" % step):
            st["tmp"] = n
            try:
                st["tmp_files"] = set(os.listdir(os.path.join(base, n)))
            except FileNotFoundError:
                pass
        elif n == "global_step%d" % step:
            st["final"] = True
        elif n == "latest.tmp":
            st["latest_tmp"] = True
    try:
        with open(os.path.join(base, "latest"), "rb") as f:
            st["latest"] = f.read().decode("utf-8", "replace").strip()
    except (FileNotFoundError, IsADirectoryError):
        pass
    return st


KILL_MOMENTS = [
    ("tmp-directory-made", lambda st, s: st["tmp"] is not None),
    ("tmp-model-file", lambda st, s: "model.safetensors" in st["tmp_files"]),
    ("tmp-optimizer-file", lambda st, s: "optimizer.safetensors" in st["tmp_files"]),
    ("tmp-state-file", lambda st, s: "state.json" in st["tmp_files"]),
    ("tmp-config-file", lambda st, s: "config.toml" in st["tmp_files"]),
    ("renamed-latest-not-yet", lambda st, s: st["final"] and st["latest"] == "global_step%d" % (s - 1)),
    ("latest.tmp-written", lambda st, s: st["latest_tmp"] and st["final"] and st["latest"] in (
        None, "global_step%d" % (s - 1))),
    ("latest-names-it", lambda st, s: st["latest"] == "global_step%d" % s),
]


def d_sigkill(step, moment, delay):
    """Trains the SIGKILL config; kills it at `moment` of the save of `step` (+ delay s); resumes."""

    def driver(ctx, p, d):
        base = os.path.join(d, "ck")
        proc = spawn(ctx, [ctx.neox, "train", ctx.kill], d, name="killed")
        pred = dict(KILL_MOMENTS)[moment]
        seen, end = None, time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            st = save_state(base, step)
            if pred(st, step):
                seen = st
                break
        if seen is not None and delay:
            time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        after = save_state(base, step)
        if not killed:
            what = "the run ended before the moment was seen"
        elif seen is None:
            what = "killed after 60 s without seeing the moment"
        else:
            what = "killed at %s of step %d%s (then: tmp=%s files=%s, global_step%d %s, latest=%s)" % (
                moment, step, " + %gs" % delay if delay else "", after["tmp"], sorted(after["tmp_files"]), step,
                "exists" if after["final"] else "absent", after["latest"])
        complete = [g for g in sorted(os.listdir(base)) if g.startswith("global_step") and all(
            os.path.isfile(os.path.join(base, g, f)) for f in ("model.safetensors", "optimizer.safetensors",
                                                               "state.json", "config.toml"))] if \
            os.path.isdir(base) else []
        r = run_cmd(ctx, [ctx.neox, "train", ctx.kill, "--set", "training.load=ck"], d, timeout=p.timeout)
        r.cmd = "neox train kill.toml (SIGKILL: %s); %s" % (what, r.cmd.replace(ctx.kill, "kill.toml"))
        r.extra["complete"] = complete
        return r

    return driver


def k_resumed(ctx, d, r):
    """A refused resume is right only when no complete checkpoint was left."""
    if r.rc not in (0, None) and r.extra.get("complete"):
        return "the resume failed although %s was complete: %s" % (r.extra["complete"][-1], first_line(r.err) or
                                                                   first_line(r.out))
    return None


def probes_sigkill(ctx):
    P = []
    for step in (2, 3, 4):
        for moment, _ in KILL_MOMENTS:
            P.append(Probe("sigkill/save-%d:%s" % (step, moment), "sigkill", [], expect="either",
                           driver=d_sigkill(step, moment, 0), names=("ck",), check=c_ckpt("ck", 5, "kref_ck"),
                           keep=k_resumed, timeout=120, stdout_ok=True,
                           what="SIGKILL during the save of step %d (%s), then resume" % (step, moment)))
    for step in (2, 4):
        for delay in (0.001, 0.003, 0.01, 0.03):
            P.append(Probe("sigkill/save-%d:tmp-directory-made+%gs" % (step, delay), "sigkill", [], expect="either",
                           driver=d_sigkill(step, "tmp-directory-made", delay), names=("ck",),
                           check=c_ckpt("ck", 5, "kref_ck"), keep=k_resumed, timeout=120, stdout_ok=True))
    return P


# ---------------------------------------------------------------------------
# Report


def report(records, neox, secs, jobs):
    lines = []
    classes = [c for c in CLASSES if any(r.cls == c for r in records)]
    extra = sorted({r.outcome for r in records} - set(OUTCOMES))
    cols = OUTCOMES + extra
    width = max([len(c) for c in classes] + [5])
    head = "%-*s %6s" % (width, "class", "tried") + "".join(" %*s" % (max(len(c), 5), c) for c in cols)
    lines += ["neox robustness probes: %s" % neox, "%d probes in %.0f s (--jobs %d)" % (len(records), secs, jobs), "",
              head, "-" * len(head)]
    for c in classes + ["total"]:
        rs = [r for r in records if c == "total" or r.cls == c]
        if c == "total":
            lines.append("-" * len(head))
        lines.append("%-*s %6d" % (width, c, len(rs)) + "".join(" %*d" % (max(len(o), 5), sum(r.outcome == o for r in rs))
                                                               for o in cols))
    order = {o: i for i, o in enumerate(["crash", "hang", "silent-wrong", "false-error", "harness-error",
                                         "plugin-crash", "unclear-error"])}
    key = lambda r: (order.get(r.outcome, 99), CLASSES.index(r.cls), r.id)
    bad = sorted([r for r in records if r.outcome not in ("ok", "clear-error", "unclear-error")], key=key)
    lines += ["", "Crashes, hangs, silent wrongs, false errors and plugin crashes (%d):" % len(bad)]
    for r in bad:
        lines.append("")
        lines.append("%-13s %s  [%s]" % (r.outcome, r.id, r.status))
        lines.append("    $ " + r.cmd)
        if r.why:
            lines.append("    why: " + r.why)
        if r.stderr1:
            lines.append("    stderr: " + r.stderr1)
    unclear = sorted([r for r in records if r.outcome == "unclear-error"], key=key)
    lines += ["", "Unclear errors (%d): the probe, then why (--records has each command line):" % len(unclear), ""]
    for r in unclear:
        lines.append("%s  [%s]: %s" % (r.id, r.status, r.why[:200]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Main


def all_probes(ctx):
    probes = []
    for c in CLASSES:
        gen = globals().get("probes_" + c.replace("-", "_"))
        if gen:
            probes += gen(ctx)
    ids = [p.id for p in probes]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SetupError("duplicate probe ids: %s" % sorted(dup))
    return probes


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description="Robustness probes for neox (see the header of this file).")
    ap.add_argument("--neox", required=True, help="the neox executable (BUILD/bin/neox)")
    ap.add_argument("--only", default="", help="comma-separated classes: " + ", ".join(CLASSES))
    ap.add_argument("--match", default="", help="only probes whose id contains this")
    ap.add_argument("--jobs", type=int, default=2, help="probes run at once (default 2)")
    ap.add_argument("--report", help="also write the report to this file")
    ap.add_argument("--records", help="write every probe's record as JSON lines to this file")
    ap.add_argument("--testdata", default=os.path.join(repo, "..", "shared", "testdata"),
                    help="the reference data (default ../shared/testdata beside the source tree)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and each probe's files")
    ap.add_argument("--list", action="store_true", help="list the probes and exit")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args()
    only = [c.strip() for c in a.only.split(",") if c.strip()]
    for c in only:
        if c not in CLASSES:
            ap.error("--only: unknown class %r (classes: %s)" % (c, ", ".join(CLASSES)))
    neox = os.path.abspath(a.neox)
    if not (os.path.isfile(neox) and os.access(neox, os.X_OK)):
        ap.error("--neox: %s is not an executable file" % a.neox)
    testdata = os.path.abspath(a.testdata) if os.path.isdir(a.testdata) else None

    def log(msg):
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    tmp = tempfile.mkdtemp(prefix="neox-probe-")
    ctx = Ctx(neox, tmp, testdata, repo)
    ctx.keep_dirs = a.keep
    t0 = time.monotonic()
    try:
        try:
            make_fixtures(ctx, log)
            probes = all_probes(ctx)
        except SetupError as e:
            print("probe.py: setup failed: %s" % e, file=sys.stderr)
            return 2
        if only:
            probes = [p for p in probes if p.cls in only]
        if a.match:
            probes = [p for p in probes if a.match in p.id]
        if a.list:
            for p in probes:
                print("%-60s %-7s %s" % (p.id, p.expect, p.what))
            return 0
        log("%d probes, %d at a time (fixtures took %.0f s)" % (len(probes), a.jobs, time.monotonic() - t0))
        records = []
        done = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            futures = [pool.submit(run_probe, ctx, p) for p in probes]
            for f in concurrent.futures.as_completed(futures):
                rec = f.result()
                records.append(rec)
                done += 1
                if rec.outcome not in ("ok", "clear-error"):
                    log("[%d/%d] %s: %s %s" % (done, len(probes), rec.outcome, rec.id, rec.why[:150]))
                elif done % 50 == 0:
                    log("[%d/%d]" % (done, len(probes)))
        order = {p.id: i for i, p in enumerate(probes)}
        records.sort(key=lambda r: order[r.id])
        rep = report(records, neox, time.monotonic() - t0, a.jobs)
        sys.stdout.write(rep)
        if a.report:
            write(a.report, rep)
        if a.records:
            write(a.records, "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
        if any(r.outcome == "harness-error" for r in records):
            return 2
        return 1 if any(r.outcome in FAILING for r in records) else 0
    finally:
        if a.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
