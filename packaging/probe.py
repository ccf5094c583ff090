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
                 (no in-process loader can survive that; documented in docs/plugins.md)
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


def run_cmd(ctx, argv, d, env=None, stdin=None, stdout="pipe", timeout=TIMEOUT, fifo_out=(), wrap=None):
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


def missing_names(p, err):
    """What the message should name but does not."""
    s = text(err)
    missing = []
    for n in p.names:
        alts = n if isinstance(n, tuple) else (n,)
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
            return "unclear-error", "the error is on stdout, not stderr: " + first_line(r.out)
        return "unclear-error", "exit %d without a message" % r.rc
    if r.out.strip() and not p.stdout_ok:
        return "unclear-error", "stdout not empty on error: " + first_line(r.out)
    missing = missing_names(p, r.err)
    if missing:
        if not missing_names(p, r.out):
            return "unclear-error", "the error is on stdout, not stderr: " + first_line(r.out)
        return "unclear-error", "stderr does not name " + ", ".join(missing)
    return "clear-error", ""


def status_of(r):
    if r.timed_out:
        return "timeout"
    if r.sig is not None:
        return "signal " + signame(r.sig)
    return "exit %d" % r.rc


def run_probe(ctx, p):
    d = os.path.join(ctx.tmp, "probes", re.sub(r"[^A-Za-z0-9_.-]+", "_", p.id))
    os.makedirs(d)
    try:
        if p.setup:
            p.setup(ctx, d)
        if p.driver:
            r = p.driver(ctx, p, d)
        else:
            r = run_cmd(ctx, [ctx.neox] + list(p.args), d, env=p.env, stdin=p.stdin, stdout=p.stdout,
                        timeout=p.timeout, fifo_out=p.fifo_out, wrap=p.wrap)
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
    def tidy(s):  # the report names the temporary directory $TMP
        return s.replace(ctx.fx, "$FX").replace(ctx.tmp, "$TMP")

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


def toml_line_of(text, section, key):
    """1-based line of `key` in [section], or None."""
    cur = None
    for i, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            cur = m.group(1).strip()
        elif cur == section and re.match(r"\s*%s\s*=" % re.escape(key), line):
            return i
    return None


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
    """exit 0: a warning on stderr must name each (a fall-back must say why)."""

    def check(ctx, d, r):
        s = text(r.err)
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
        return s_chain(s_copy("hf", "hf"), s_json("hf/config.json", lambda j: j.__setitem__(key, value)))

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
    add(Probe("issue/tokenize--threads=4294967296", "issue", ["tokenize", "--text", "hi", "--threads", "4294967296"],
              expect="either", names=("threads",)))
    add(Probe("issue/preprocess--workers=1000000000", "issue",
              ["preprocess", "--input", "a.txt", "--output-prefix", "o", "--workers", "1000000000"],
              setup=s_write("a.txt", "hello\n"), expect="either", names=("workers",), timeout=30))
    add(Probe("issue/bench-op--size=1e9", "issue",
              ["bench", "op", "gelu_forward", "--a", "cpu", "--b", "cpu", "--size", "1e9", "--runs", "1"],
              names=("size",), timeout=30))
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
    bad = [r for r in records if r.outcome not in ("ok", "clear-error")]
    order = {o: i for i, o in enumerate(["crash", "hang", "silent-wrong", "false-error", "harness-error",
                                         "plugin-crash", "unclear-error"])}
    bad.sort(key=lambda r: (order.get(r.outcome, 99), CLASSES.index(r.cls), r.id))
    lines += ["", "Every outcome other than ok and clear-error (%d):" % len(bad)]
    for r in bad:
        lines.append("")
        lines.append("%-13s %s  [%s]" % (r.outcome, r.id, r.status))
        lines.append("    $ " + r.cmd)
        if r.why:
            lines.append("    why: " + r.why)
        if r.stderr1:
            lines.append("    stderr: " + r.stderr1)
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
