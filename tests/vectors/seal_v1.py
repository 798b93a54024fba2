#!/usr/bin/env python3
"""Independent reference implementation of the offsite sealed file format, version 1.

Written from docs/FORMAT.md only (not from the Rust code in appliance/), so that the
known-answer vectors it produces are an independent check of the Rust implementation.

Dependencies: Python >= 3.11, and from PyPI: blake3, pycryptodome, argon2-cffi.

Usage:
    seal_v1.py gen OUT.json
    seal_v1.py check --key KEYFILE [--passphrase-file F] (--path REL | --path-hex HEX)
                     --sealed SEALED --plain PLAIN
    seal_v1.py selftest

Section numbers (§) below refer to docs/FORMAT.md.
"""

import argparse
import base64
import hmac
import json
import re
import struct
import sys
import zlib

import blake3
from argon2.low_level import Type, hash_secret_raw
from Crypto.Cipher import AES, ChaCha20, ChaCha20_Poly1305

U64 = 0xFFFFFFFFFFFFFFFF
U128 = (1 << 128) - 1


class SealError(Exception):
    """A sealed file (or name, or key file) that does not verify / parse."""

    def __init__(self, msg, offset=None, chunk=None):
        where = []
        if offset is not None:
            where.append("offset %d" % offset)
        if chunk is not None:
            where.append("chunk %d" % chunk)
        super().__init__(msg + (" (%s)" % ", ".join(where) if where else ""))
        self.offset = offset
        self.chunk = chunk


# --------------------------------------------------------------------------- §1 keys

def H(k, m, n=32):
    """Keyed BLAKE3, first n bytes (n > 32 means extended output)."""
    assert len(k) == 32
    return blake3.blake3(m, key=k).digest(length=n)


def DK(ctx, ikm, n):
    """BLAKE3 derive_key mode, n bytes of extended output."""
    return blake3.blake3(ikm, derive_key_context=ctx).digest(length=n)


CTX = {
    "key_id": ("offsite 2026-11-26 v1 key id", 8),
    "K_fid": ("offsite 2026-11-26 v1 file id", 32),
    "K_mac": ("offsite 2026-11-26 v1 chunk mac", 32),
    "K_aes": ("offsite 2026-11-26 v1 chunk enc aes256ctr", 32),
    "K_xch": ("offsite 2026-11-26 v1 chunk enc xchacha20", 32),
    "K_trl": ("offsite 2026-11-26 v1 trailer mac", 32),
    "K_gear": ("offsite 2026-11-26 v1 chunker gear", 32),
    "K_name": ("offsite 2026-11-26 v1 names aes-siv", 64),
    "K_long": ("offsite 2026-11-26 v1 long names", 32),
}

SUITES = {"aes256ctr": 1, "xchacha20": 2}
SUITE_NAMES = {v: k for k, v in SUITES.items()}


class Keys:
    """All working keys derived from a 32-byte master key."""

    def __init__(self, mk):
        if len(mk) != 32:
            raise ValueError("master key must be 32 bytes")
        for name, (ctx, n) in CTX.items():
            setattr(self, name, DK(ctx, mk, n))
        self._gear = None

    def subkeys(self):
        return {name: getattr(self, name) for name in CTX if name != "key_id"}

    @property
    def gear(self):
        if self._gear is None:
            self._gear = gear_table(self.K_gear)
        return self._gear


def key_id(mk):
    return DK(CTX["key_id"][0], mk, CTX["key_id"][1])


# --------------------------------------------------------------------------- §2 paths

def validate_path(path):
    """Relative path rules of §2; raises SealError before any cryptography."""
    if not isinstance(path, (bytes, bytearray)):
        raise TypeError("path must be bytes")
    if len(path) > 4096:
        raise SealError("invalid path: longer than 4096 bytes")
    if b"\x00" in path:
        raise SealError("invalid path: contains NUL")
    for comp in bytes(path).split(b"/"):   # '' for empty path, leading/trailing or double '/'
        if comp in (b"", b".", b".."):
            raise SealError("invalid path: empty, '.' or '..' component (or leading/trailing/double '/')")
    return bytes(path)


def file_id(keys, path):
    return H(keys.K_fid, validate_path(path))


# --------------------------------------------------------------------------- §4 chunker

MIN, AVG, MAX = 2048, 8192, 65536
MASK_S = 0xFFFE000000000000   # top 15 bits
MASK_L = 0xFFE0000000000000   # top 11 bits


def gear_table_bytes(k_gear):
    return H(k_gear, b"", 2048)


def gear_table(k_gear):
    return list(struct.unpack("<256Q", gear_table_bytes(k_gear)))


def next_cut(G, d, pos=0):
    """Length of the next chunk of d[pos:], exactly the pseudo-code of §4."""
    n = min(len(d) - pos, MAX)
    if n <= MIN:
        return n
    h = 0
    for i in range(MIN, min(AVG, n)):
        h = ((h << 1) + G[d[pos + i]]) & U64
        if h & MASK_S == 0:
            return i + 1
    for i in range(max(MIN, min(AVG, n)), n):
        h = ((h << 1) + G[d[pos + i]]) & U64
        if h & MASK_L == 0:
            return i + 1
    return n


def chunk_lengths(G, data):
    out, pos = [], 0
    while pos < len(data):
        n = next_cut(G, data, pos)
        out.append(n)
        pos += n
    return out


# --------------------------------------------------------------------------- §5 compression (decision only)

def compression_estimate_passes(chunk):
    """§5 step 1: over the samples at positions 0, 4, 8, ... (S of them), 512 * sum(c[b]^2) >= 3 * S^2."""
    c = [0] * 256
    sample = chunk[::4]
    for b in sample:
        c[b] += 1
    return 512 * sum(x * x for x in c) >= 3 * len(sample) * len(sample)


def compression_keeps(compressed_len, plain_len):
    """§5 step 3: keep only if 16 * len(compressed) <= 15 * L."""
    return 16 * compressed_len <= 15 * plain_len


# --------------------------------------------------------------------------- §3 sealed files

MAGIC = b"OFSL"
HEADER_LEN = 24
TRAILER_LEN = 52
MAX_BODY = 65537
MAX_PLAIN = 65536


def aes256ctr(key, tag, data):
    """AES-256-CTR, 16-byte initial counter block = tag, 128-bit big-endian counter (wraps mod 2^128)."""
    nblocks = (len(data) + 15) // 16
    c0 = int.from_bytes(tag, "big")
    blocks = b"".join(((c0 + i) & U128).to_bytes(16, "big") for i in range(nblocks))
    ks = AES.new(key, AES.MODE_ECB).encrypt(blocks)
    return _xor(data, ks)


def _xor(a, b):
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


def xchacha20(key, tag, data):
    """XChaCha20, 24-byte nonce = tag || 00*8, block counter starting at 0."""
    return ChaCha20.new(key=key, nonce=tag + b"\x00" * 8).encrypt(data)


def chunk_cipher(keys, suite, tag, data):
    if suite == 1:
        return aes256ctr(keys.K_aes, tag, data)
    if suite == 2:
        return xchacha20(keys.K_xch, tag, data)
    raise ValueError("unknown suite %r" % suite)


def make_header(keys, suite, fid):
    return MAGIC + bytes([1, suite, 1, 0]) + keys.key_id + fid[:8]


def seal_record(keys, suite, header, fid, body):
    tag = H(keys.K_mac, header + fid + body)[:16]
    ct = chunk_cipher(keys, suite, tag, body)
    return struct.pack("<I", len(body)) + tag + ct, tag


def trailer_mac(keys, header, fid, tags, count, plain_len):
    return H(keys.K_trl, header + fid + b"".join(tags) + struct.pack("<QQ", count, plain_len))


def seal(mk, suite, path, plain, _compress=None):
    """Seal plain for path (§3). Compression is always OFF (flags 00): Python cannot reproduce
    miniz_oxide's deflate output. _compress is a test hook (selftest only): a function
    chunk -> payload-or-None used to produce flags-01 chunks."""
    if isinstance(suite, str):
        suite = SUITES[suite]
    keys = Keys(mk)
    fid = file_id(keys, path)
    header = make_header(keys, suite, fid)
    out, tags, pos = [header], [], 0
    while pos < len(plain):
        n = next_cut(keys.gear, plain, pos)
        chunk = plain[pos:pos + n]
        body = b"\x00" + chunk
        if _compress is not None:
            payload = _compress(chunk)
            if payload is not None:
                body = b"\x01" + payload
        rec, tag = seal_record(keys, suite, header, fid, body)
        out.append(rec)
        tags.append(tag)
        pos += n
    out.append(b"\x00\x00\x00\x00" + struct.pack("<QQ", len(tags), len(plain))
               + trailer_mac(keys, header, fid, tags, len(tags), len(plain)))
    return b"".join(out)


def inflate_bounded(payload, offset, index):
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(payload, MAX_PLAIN + 1)
    except zlib.error as e:
        raise SealError("invalid DEFLATE stream: %s" % e, offset, index)
    if len(out) > MAX_PLAIN or d.unconsumed_tail:
        raise SealError("DEFLATE stream inflates to more than %d bytes" % MAX_PLAIN, offset, index)
    if not d.eof:
        raise SealError("incomplete DEFLATE stream", offset, index)
    if d.unused_data:
        raise SealError("data after the end of the DEFLATE stream", offset, index)
    return out


def unseal(mk, path, data, info=None):
    """Verify and decrypt a sealed file, checks in the order of §3 'What the decryptor checks'.
    Returns the plaintext; if info is a dict it is filled with suite, count, compressed, chunks."""
    keys = Keys(mk)
    validate_path(path)                         # before any cryptography (§2)
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise SealError("truncated header", 0)
    header = data[:HEADER_LEN]
    if header[0:4] != MAGIC:
        raise SealError("bad magic", 0)
    if header[4] != 1:
        raise SealError("unsupported version %d" % header[4], 4)
    suite = header[5]
    if suite not in (1, 2):
        raise SealError("unknown suite %d" % suite, 5)
    if header[6] != 1:
        raise SealError("unknown chunker %d" % header[6], 6)
    if header[7] != 0:
        raise SealError("header flags must be 00, got %02x" % header[7], 7)
    if not hmac.compare_digest(header[8:16], keys.key_id):
        raise SealError("wrong key: file sealed with key id %s, this key is %s"
                        % (header[8:16].hex(), keys.key_id.hex()), 8)
    fid = H(keys.K_fid, path)
    if not hmac.compare_digest(header[16:24], fid[:8]):
        raise SealError("wrong path: file was sealed for another path", 16)

    off, idx, tags, plain, compressed, lens = HEADER_LEN, 0, [], [], [], []
    while True:
        if len(data) - off < 4:
            raise SealError("truncated: trailer missing", off, idx)
        (n,) = struct.unpack_from("<I", data, off)
        if n == 0:
            break
        if n > MAX_BODY:
            raise SealError("record length %d out of bounds (1..%d)" % (n, MAX_BODY), off, idx)
        if len(data) - off < 4 + 16 + n:
            raise SealError("truncated chunk record", off, idx)
        tag = data[off + 4:off + 20]
        body = chunk_cipher(keys, suite, tag, data[off + 20:off + 20 + n])
        if not hmac.compare_digest(H(keys.K_mac, header + fid + body)[:16], tag):
            raise SealError("chunk tag mismatch", off, idx)
        # authenticated from here on
        flags = body[0]
        if flags == 0:
            pt = body[1:]
        elif flags == 1:
            pt = inflate_bounded(body[1:], off, idx)
            compressed.append(idx)
        else:
            raise SealError("invalid chunk flags %02x" % flags, off, idx)
        if not 1 <= len(pt) <= MAX_PLAIN:
            raise SealError("chunk plaintext length %d out of bounds (1..%d)" % (len(pt), MAX_PLAIN), off, idx)
        plain.append(pt)
        lens.append(len(pt))
        tags.append(tag)
        off += 20 + n
        idx += 1

    if len(data) - off < TRAILER_LEN:
        raise SealError("truncated trailer", off, idx)
    count, plain_len = struct.unpack_from("<QQ", data, off + 4)
    mac = data[off + 20:off + 52]
    if not hmac.compare_digest(trailer_mac(keys, header, fid, tags, count, plain_len), mac):
        raise SealError("trailer MAC mismatch", off, idx)
    if count != idx:
        raise SealError("trailer count %d but %d chunk records" % (count, idx), off, idx)
    total = sum(lens)
    if plain_len != total:
        raise SealError("trailer plain_len %d but chunks hold %d bytes" % (plain_len, total), off, idx)
    if off + TRAILER_LEN != len(data):
        raise SealError("%d bytes after the trailer" % (len(data) - off - TRAILER_LEN), off + TRAILER_LEN, idx)
    if info is not None:
        info.update(suite=suite, count=idx, compressed=compressed, chunk_lengths=lens)
    return b"".join(plain)


# --------------------------------------------------------------------------- §6 names

def b32(b):
    return base64.b32encode(b).decode("ascii").rstrip("=").lower()


def unb32(s):
    if not re.fullmatch(r"[a-z2-7]*", s) or len(s) % 8 in (1, 3, 6):
        raise SealError("invalid base32 name component")
    b = base64.b32decode(s.upper() + "=" * (-len(s) % 8))
    if b32(b) != s:                       # non-canonical trailing bits
        raise SealError("non-canonical base32 name component")
    return b


def validate_name(name):
    if name in (b"", b".", b"..") or b"/" in name or b"\x00" in name:
        raise SealError("invalid name %r" % name)
    if len(name) > 255:
        raise SealError("name longer than 255 bytes")
    return name


def pad_name(name):
    pt = name + b"\x80"
    return pt + b"\x00" * (-len(pt) % 16)


def unpad_name(pt):
    if len(pt) == 0 or len(pt) % 16:
        raise SealError("bad name padding")
    i = len(pt) - 1
    while i >= 0 and pt[i] == 0:
        i -= 1
    if i < 0 or pt[i] != 0x80 or len(pt) - i > 16:
        raise SealError("bad name padding")
    return pt[:i]


def siv_seal(k_name, parent, pt):
    c = AES.new(k_name, AES.MODE_SIV)
    c.update(parent)                       # exactly one AD component (may be empty)
    ct, siv = c.encrypt_and_digest(pt)
    return siv + ct


def siv_open(k_name, parent, blob):
    if len(blob) < 32:
        raise SealError("sealed name too short")
    c = AES.new(k_name, AES.MODE_SIV)
    c.update(parent)
    try:
        return c.decrypt_and_verify(blob[16:], blob[:16])
    except ValueError:
        raise SealError("name does not authenticate (wrong key or wrong parent)")


LONG_PREFIX = ".offsite-longname-"


def seal_name(mk, parent, name):
    """Returns (component, side_file_name or None, side_file_content or None)."""
    keys = Keys(mk)
    validate_name(name)
    if parent:
        validate_path(parent)
    full = b32(siv_seal(keys.K_name, parent, pad_name(name)))
    if len(name) <= 127:
        return full, None, None
    h = b32(H(keys.K_long, full.encode("ascii"))[:20])
    return "_" + h, LONG_PREFIX + h, full


def unseal_name(mk, parent, component, side_content=None):
    """side_content: the content of the side file (str or bytes) for a long-form component."""
    keys = Keys(mk)
    if component.startswith("_"):
        if len(component) != 33:
            raise SealError("bad long-name component")
        want = unb32(component[1:])
        if side_content is None:
            raise SealError("long name: side file %s%s missing" % (LONG_PREFIX, component[1:]))
        if isinstance(side_content, str):
            side_content = side_content.encode("ascii")
        if not hmac.compare_digest(H(keys.K_long, side_content)[:20], want):
            raise SealError("long name: side file content does not match the component hash")
        full = side_content.decode("ascii")
        long_form = True
    else:
        full = component
        long_form = False
    name = unpad_name(siv_open(keys.K_name, parent, unb32(full)))
    validate_name(name)
    if long_form != (len(name) >= 128):
        raise SealError("name of %d bytes in the wrong form" % len(name))
    return name


# --------------------------------------------------------------------------- §1 key file

KDF_LIMITS = {"m": (8, 1048576), "t": (1, 64), "p": (1, 16)}


def argon2id(passphrase, salt, m, t, p):
    return hash_secret_raw(passphrase, salt, time_cost=t, memory_cost=m, parallelism=p,
                           hash_len=32, type=Type.ID, version=19)


def read_passphrase_file(raw):
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise SealError("empty passphrase refused")
    return raw


def _dec(s):
    if not re.fullmatch(r"0|[1-9][0-9]*", s):
        raise SealError("key file: bad number %r" % s)
    return int(s)


def write_keyfile_plain(mk, suite):
    return ("offsite-key 1\nsuite %s\nkey-id %s\nmaster %s\n"
            % (suite, key_id(mk).hex(), mk.hex()))


def write_keyfile_wrapped(mk, suite, passphrase, salt, nonce, m=65536, t=3, p=1):
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    assert len(salt) == 16 and len(nonce) == 24 and suite in SUITES
    head = ("offsite-key 1\nsuite %s\nkey-id %s\nkdf argon2id m=%d t=%d p=%d salt=%s\n"
            % (suite, key_id(mk).hex(), m, t, p, salt.hex()))
    kek = argon2id(passphrase, salt, m, t, p)
    c = ChaCha20_Poly1305.new(key=kek, nonce=nonce)
    c.update(head.encode("ascii"))
    ct, tag = c.encrypt_and_digest(mk)
    return head + "wrapped %s\n" % (nonce + ct + tag).hex()


def parse_keyfile(text, passphrase=None):
    """Returns (master_key, suite_name). passphrase: bytes (already stripped) or None."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise SealError("key file is not ASCII")
    if not text.endswith("\n"):
        raise SealError("key file: last line does not end with \\n")
    lines = text[:-1].split("\n")
    if len(lines) not in (4, 5):
        raise SealError("key file: expected 4 or 5 lines, got %d" % len(lines))
    if lines[0] != "offsite-key 1":
        raise SealError("key file: first line must be 'offsite-key 1'")
    m = re.fullmatch(r"suite (aes256ctr|xchacha20)", lines[1])
    if not m:
        raise SealError("key file: bad suite line")
    suite = m.group(1)
    m = re.fullmatch(r"key-id ([0-9a-f]{16})", lines[2])
    if not m:
        raise SealError("key file: bad key-id line")
    kid = bytes.fromhex(m.group(1))
    if len(lines) == 4:
        m = re.fullmatch(r"master ([0-9a-f]{64})", lines[3])
        if not m:
            raise SealError("key file: bad master line")
        mk = bytes.fromhex(m.group(1))
    else:
        m = re.fullmatch(r"kdf argon2id m=(\d+) t=(\d+) p=(\d+) salt=([0-9a-f]{32})", lines[3])
        if not m:
            raise SealError("key file: bad kdf line")
        params = {"m": _dec(m.group(1)), "t": _dec(m.group(2)), "p": _dec(m.group(3))}
        for k, (lo, hi) in KDF_LIMITS.items():
            if not lo <= params[k] <= hi:
                raise SealError("key file: kdf %s=%d outside %d..%d" % (k, params[k], lo, hi))
        salt = bytes.fromhex(m.group(4))
        w = re.fullmatch(r"wrapped ([0-9a-f]{144})", lines[4])
        if not w:
            raise SealError("key file: bad wrapped line")
        if passphrase is None:
            raise SealError("key file is passphrase-wrapped: passphrase needed")
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        if not passphrase:
            raise SealError("empty passphrase refused")
        blob = bytes.fromhex(w.group(1))
        ad = "".join(l + "\n" for l in lines[:4]).encode("ascii")
        try:
            kek = argon2id(passphrase, salt, params["m"], params["t"], params["p"])
        except Exception as e:  # e.g. m < 8*p, which argon2 itself rejects
            raise SealError("key file: argon2id failed: %s" % e)
        c = ChaCha20_Poly1305.new(key=kek, nonce=blob[:24])
        c.update(ad)
        try:
            mk = c.decrypt_and_verify(blob[24:56], blob[56:])
        except ValueError:
            raise SealError("wrong passphrase (or corrupted key file)")
    if not hmac.compare_digest(key_id(mk), kid):
        raise SealError("key file: key-id does not match the master key (corrupted key file)")
    return mk, suite


# --------------------------------------------------------------------------- vectors

def make_input(spec):
    if spec["kind"] == "xof":
        return blake3.blake3(b"offsite test input " + spec["label"].encode()).digest(length=spec["len"])
    if spec["kind"] == "text":
        out, i, n = [], 0, 0
        while n < spec["len"]:
            s = ("line %06d: the quick brown fox jumps over the lazy dog\n" % i).encode()
            out.append(s)
            n += len(s)
            i += 1
        return b"".join(out)[:spec["len"]]
    if spec["kind"] == "hex":
        return bytes.fromhex(spec["hex"])
    raise ValueError(spec)


INPUTS_DOC = ("an input is {\"kind\": \"xof\", \"label\": L, \"len\": N} = first N bytes of BLAKE3 XOF of "
              "b'offsite test input ' + L.encode(), or {\"kind\": \"text\", \"len\": N} = the concatenation of "
              "('line %06d: the quick brown fox jumps over the lazy dog\\n' % i) for i = 0,1,2,... truncated "
              "to N bytes, or {\"kind\": \"hex\", \"hex\": H}")

VECTOR_MK = bytes(range(32))


def gen_vectors():
    mk = VECTOR_MK
    keys = Keys(mk)
    v = {
        "format": "offsite-seal-v1",
        "generator": "tests/vectors/seal_v1.py",
        "master_key": mk.hex(),
        "key_id": keys.key_id.hex(),
        "subkeys": {k: b.hex() for k, b in keys.subkeys().items()},
        "gear_table_blake3": blake3.blake3(gear_table_bytes(keys.K_gear)).hexdigest(),
        "inputs": INPUTS_DOC,
        "cutpoints": [],
        "files": [],
        "names": [],
        "keyfiles": [],
    }
    for spec in ({"kind": "xof", "label": "cut-a", "len": 1 << 20}, {"kind": "text", "len": 300000}):
        v["cutpoints"].append({"input": spec, "chunk_lengths": chunk_lengths(keys.gear, make_input(spec))})

    files = [
        ("empty", "empty.txt", {"kind": "hex", "hex": ""}),
        ("1 byte", "a.txt", {"kind": "hex", "hex": "61"}),
        ("2048 bytes (= MIN, one chunk)", "dir/sub/file.bin", {"kind": "xof", "label": "2048", "len": 2048}),
        ("65536 bytes (input = MAX)", "dir/sub/max.bin", {"kind": "xof", "label": "65536", "len": 65536}),
        ("65537 bytes (MAX + 1)", "dir/max+1.bin", {"kind": "xof", "label": "65537", "len": 65537}),
        ("300000 bytes pseudo-random, non-UTF-8 path", bytes.fromhex("6469722fff fe2e62696e".replace(" ", "")),
         {"kind": "xof", "label": "multi", "len": 300000}),
        ("text 100000 bytes, compression off", "docs/notes.txt", {"kind": "text", "len": 100000}),
        # zeros never cut: one chunk of exactly MAX (body n = 65537, the record bound) + a 1-byte chunk
        ("65537 zero bytes (a MAX chunk + 1 byte)", "zeros.bin", {"kind": "hex", "hex": "00" * 65537}),
    ]
    for suite in ("aes256ctr", "xchacha20"):
        for name, path, spec in files:
            pb = path if isinstance(path, bytes) else path.encode()
            sealed = seal(mk, suite, pb, make_input(spec))
            info = {}
            assert unseal(mk, pb, sealed, info) == make_input(spec)
            v["files"].append({
                "name": "%s, %s" % (name, suite),
                "suite": suite,
                "path_hex": pb.hex(),
                "input": spec,
                "sealed_len": len(sealed),
                "sealed_blake3": blake3.blake3(sealed).hexdigest(),
                "sealed_hex": sealed.hex() if len(sealed) <= 4096 else None,
                "chunk_count": info["count"],
            })

    names = [
        (b"", b"holiday.jpg"),
        (b"photos/2024", b"holiday.jpg"),
        (b"photos", b"caf\xe9 \xff\xfe.txt"),                 # not UTF-8
        (b"", b"fifteen-bytes.x"),                           # 15
        (b"a/b", b"sixteen-bytes.xy"),                       # 16
        (b"", (b"n127-" + b"x" * 127)[:127]),               # 127: longest short form
        (b"deep/dir", (b"n128-" + b"y" * 128)[:128]),       # 128: shortest long form
        (b"", (b"n255-" + bytes(range(0x41, 0x5b)) * 10)[:255]),  # 255: longest name
    ]
    for parent, name in names:
        assert len(name) in (11, 15, 16, 127, 128, 255) or b"\xff" in name
        comp, side, content = seal_name(mk, parent, name)
        assert unseal_name(mk, parent, comp, content) == name
        v["names"].append({"parent_hex": parent.hex(), "name_hex": name.hex(), "sealed": comp,
                           "side_file": side, "side_content": content})

    v["keyfiles"].append({"text": write_keyfile_plain(mk, "xchacha20"), "passphrase": None,
                          "master_key": mk.hex(), "suite": "xchacha20"})
    pw = "correct horse battery staple"
    salt = bytes(range(0xa0, 0xb0))
    nonce = bytes(range(0xc0, 0xd8))
    text = write_keyfile_wrapped(mk, "aes256ctr", pw, salt, nonce, m=64, t=1, p=1)
    assert parse_keyfile(text, pw.encode()) == (mk, "aes256ctr")
    v["keyfiles"].append({"text": text, "passphrase": pw, "master_key": mk.hex(), "suite": "aes256ctr"})
    return v


def cmd_gen(out):
    v = gen_vectors()
    with open(out, "w") as f:
        json.dump(v, f, indent=1)
        f.write("\n")
    print("wrote %s: %d cutpoint sets, %d files, %d names, %d key files"
          % (out, len(v["cutpoints"]), len(v["files"]), len(v["names"]), len(v["keyfiles"])))


# --------------------------------------------------------------------------- check

def cmd_check(a):
    try:
        with open(a.key, "rb") as f:
            ktext = f.read()
        pw = None
        if a.passphrase_file:
            with open(a.passphrase_file, "rb") as f:
                pw = read_passphrase_file(f.read())
        mk, _suite = parse_keyfile(ktext, pw)
        path = bytes.fromhex(a.path_hex) if a.path_hex is not None else a.path.encode("utf-8")
        with open(a.sealed, "rb") as f:
            sealed = f.read()
        with open(a.plain, "rb") as f:
            want = f.read()
        info = {}
        try:
            got = unseal(mk, path, sealed, info)
        except SealError as e:
            raise SealError("%s: %s" % (a.sealed, e))
        if got != want:
            i = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), min(len(got), len(want)))
            raise SealError("%s: unsealed plaintext differs from %s (lengths %d vs %d, first difference at byte %d)"
                            % (a.sealed, a.plain, len(got), len(want), i))
        # Conformance beyond decryptability: cut points and compression decisions are deterministic (§4, §5).
        if not a.no_conformance:
            keys = Keys(mk)
            ref = chunk_lengths(keys.gear, want)
            if info["chunk_lengths"] != ref:
                k = next((j for j in range(min(len(ref), len(info["chunk_lengths"])))
                          if ref[j] != info["chunk_lengths"][j]), None)
                raise SealError("%s: chunk boundaries differ from the reference chunker (first at chunk %s; "
                                "%d chunks vs %d expected)" % (a.sealed, k, len(info["chunk_lengths"]), len(ref)))
            pos = 0
            for j, n in enumerate(ref):
                chunk = want[pos:pos + n]
                pos += n
                if j in info["compressed"] and not compression_estimate_passes(chunk):
                    raise SealError("%s: chunk %d is compressed but fails the §5 estimate" % (a.sealed, j))
            # compressed payload size rule: re-derive from the file
            off = HEADER_LEN
            for j in range(info["count"]):
                (n,) = struct.unpack_from("<I", sealed, off)
                if j in info["compressed"] and not compression_keeps(n - 1, ref[j]):
                    raise SealError("%s: chunk %d kept a compressed payload of %d bytes for %d plain bytes "
                                    "(§5 step 3 requires 16*len <= 15*L)" % (a.sealed, j, n - 1, ref[j]))
                off += 20 + n
    except (SealError, OSError, ValueError) as e:
        print("error: %s" % e)
        return 1
    print("ok: %d chunks, %d compressed, %d bytes" % (info["count"], len(info["compressed"]), len(got)))
    return 0


# --------------------------------------------------------------------------- selftest

def _s2v_cmac_manual(k_name, parent, pt):
    """RFC 5297 AES-SIV written out by hand (CMAC + CTR), used only to cross-check pycryptodome."""
    from Crypto.Hash import CMAC

    def cmac(k, m):
        return CMAC.new(k, msg=m, ciphermod=AES).digest()

    def dbl(b):
        x = int.from_bytes(b, "big") << 1
        if x >> 128:
            x = (x & U128) ^ 0x87
        return x.to_bytes(16, "big")

    def xor(a, b):
        return bytes(x ^ y for x, y in zip(a, b))

    k1, k2 = k_name[:len(k_name) // 2], k_name[len(k_name) // 2:]
    d = cmac(k1, b"\x00" * 16)
    d = xor(dbl(d), cmac(k1, parent))
    if len(pt) >= 16:
        t = pt[:-16] + xor(pt[-16:], d)
    else:
        p = pt + b"\x80" + b"\x00" * (15 - len(pt))
        t = xor(dbl(d), p)
    v = cmac(k1, t)
    q = int.from_bytes(v, "big") & ~((1 << 63) | (1 << 31)) & U128
    nb = (len(pt) + 15) // 16
    ks = AES.new(k2, AES.MODE_ECB).encrypt(b"".join(((q + i) & U128).to_bytes(16, "big") for i in range(nb)))
    return v + xor(pt, ks)


def selftest():
    import time
    t0 = time.time()
    fails = []
    passed = [0]

    def check(cond, what):
        if cond:
            passed[0] += 1
        else:
            fails.append(what)
            print("FAIL:", what)

    def expect_error(fn, what, contains=None):
        try:
            fn()
        except SealError as e:
            check(not contains or contains in str(e), "%s: wrong error %r (wanted %r)" % (what, str(e), contains))
            return
        check(False, "%s: no error raised" % what)

    # --- primitives against published vectors
    # RFC 5297 A.1 (deterministic AES-SIV, AES-128)
    k = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    pt = bytes.fromhex("112233445566778899aabbccddee")
    want = bytes.fromhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
    check(siv_seal(k, ad, pt) == want, "RFC 5297 A.1 via pycryptodome")
    check(_s2v_cmac_manual(k, ad, pt) == want, "RFC 5297 A.1 via manual S2V")
    # draft-irtf-cfrg-xchacha-03 A.3.1 (XChaCha20-Poly1305)
    c = ChaCha20_Poly1305.new(key=bytes(range(0x80, 0xa0)), nonce=bytes(range(0x40, 0x58)))
    c.update(bytes.fromhex("50515253c0c1c2c3c4c5c6c7"))
    ct, tag = c.encrypt_and_digest(b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                                   b"tip for the future, sunscreen would be it.")
    check(ct.hex() == "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644"
          "0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc3694"
          "88f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
          and tag.hex() == "c0875924c1c7987947deafd8780acf49", "XChaCha20-Poly1305 draft A.3.1")
    # our CTR against pycryptodome's CTR (no wrap), and the wrap case is defined mod 2^128
    kk = bytes(range(32))
    tg = bytes(range(16))
    data = bytes(range(256)) * 5
    check(aes256ctr(kk, tg, data) == AES.new(kk, AES.MODE_CTR, nonce=b"", initial_value=tg).encrypt(data),
          "AES-CTR matches pycryptodome")
    wrap = aes256ctr(kk, b"\xff" * 16, b"\x00" * 32)
    e = AES.new(kk, AES.MODE_ECB)
    check(wrap == e.encrypt(b"\xff" * 16) + e.encrypt(b"\x00" * 16), "AES-CTR counter wraps mod 2^128")

    mk = VECTOR_MK
    keys = Keys(mk)
    # names: pycryptodome SIV == manual S2V for empty and non-empty parent
    for parent in (b"", b"photos/2024"):
        p = pad_name(b"x" * 20)
        check(siv_seal(keys.K_name, parent, p) == _s2v_cmac_manual(keys.K_name, parent, p),
              "SIV pycryptodome vs manual, parent %r" % parent)

    # --- paths
    for bad in (b"", b"/a", b"a/", b"a//b", b".", b"..", b"a/./b", b"a/../b", b"a\x00b", b"x" * 4097):
        expect_error(lambda: validate_path(bad), "path %r rejected" % bad[:20])
    for good in (b"a", b"a/b/c", b"...", b".hidden/x", b"\xff\xfe", b"x" * 4096):
        validate_path(good)

    # --- chunker properties
    rnd = blake3.blake3(b"selftest").digest(length=300000)
    lens = chunk_lengths(keys.gear, rnd)
    check(sum(lens) == len(rnd) and all(1 <= n <= MAX for n in lens[:-1]) and all(n > MIN for n in lens[:-1]),
          "chunk lengths in bounds")
    # locality: editing one byte in the middle changes few cut points
    ed = bytearray(rnd)
    ed[150000] ^= 1
    lens2 = chunk_lengths(keys.gear, bytes(ed))
    check(len(set(lens) ^ set(lens2)) <= 4, "chunker is local")
    check(chunk_lengths(keys.gear, b"") == [] and chunk_lengths(keys.gear, b"z" * 2049) != [],
          "chunker edge cases")

    # --- round trips
    sealed_by = {}
    for suite in ("aes256ctr", "xchacha20"):
        for plain in (b"", b"a", rnd[:2048], rnd[:65537], rnd):
            s = seal(mk, suite, b"dir/f", plain)
            info = {}
            check(unseal(mk, b"dir/f", s, info) == plain, "round trip %s %d" % (suite, len(plain)))
            check(s == seal(mk, suite, b"dir/f", plain), "deterministic %s" % suite)
        sealed_by[suite] = seal(mk, suite, b"dir/f", rnd)
    check(sealed_by["aes256ctr"] != sealed_by["xchacha20"], "suites differ")

    # compressed chunks (flags 01), produced with zlib raw deflate through the test hook
    def deflate(chunk):
        if not compression_estimate_passes(chunk):
            return None
        co = zlib.compressobj(1, zlib.DEFLATED, -15)
        out = co.compress(chunk) + co.flush()
        return out if compression_keeps(len(out), len(chunk)) else None

    text = make_input({"kind": "text", "len": 100000})
    mixed = text[:40000] + rnd[:40000] + text[40000:]
    for suite in ("aes256ctr", "xchacha20"):
        s = seal(mk, suite, b"t.txt", mixed, _compress=deflate)
        info = {}
        check(unseal(mk, b"t.txt", s, info) == mixed and info["compressed"] and
              len(info["compressed"]) < info["count"], "compressed round trip %s" % suite)

    # inflate bomb / bad deflate / bad flags / empty chunk, all properly tagged
    def one_chunk_file(body, suite=1):
        fid = file_id(keys, b"x")
        header = make_header(keys, suite, fid)
        rec, tag = seal_record(keys, suite, header, fid, body)
        plen = 65537 if body[0] == 1 else len(body) - 1
        return header + rec + b"\0\0\0\0" + struct.pack("<QQ", 1, plen) + trailer_mac(keys, header, fid, [tag], 1, plen)

    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = co.compress(b"\0" * 65537) + co.flush()
    expect_error(lambda: unseal(mk, b"x", one_chunk_file(b"\x01" + bomb)), "inflate bound", "more than")
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    ok64k = co.compress(b"\0" * 65536) + co.flush()
    check(inflate_bounded(ok64k, 0, 0) == b"\0" * 65536, "inflate exactly 65536")
    expect_error(lambda: unseal(mk, b"x", one_chunk_file(b"\x01" + bomb[:-2])), "truncated deflate")
    expect_error(lambda: unseal(mk, b"x", one_chunk_file(b"\x01" + ok64k + b"zz")), "deflate trailing data")
    expect_error(lambda: unseal(mk, b"x", one_chunk_file(b"\x02abc")), "bad chunk flags", "flags")
    expect_error(lambda: unseal(mk, b"x", one_chunk_file(b"\x00")), "empty chunk plaintext", "length 0")

    # --- negative checks on a multi-chunk file
    base = seal(mk, "xchacha20", b"dir/f", rnd[:100000])
    recs, off = [], HEADER_LEN
    while True:
        (n,) = struct.unpack_from("<I", base, off)
        if n == 0:
            break
        recs.append(base[off:off + 20 + n])
        off += 20 + n
    header, trailer = base[:HEADER_LEN], base[off:]
    check(len(recs) >= 3, "need >= 3 chunks for negative tests (got %d)" % len(recs))

    def flip(b, i, bit=1):
        b = bytearray(b)
        b[i] ^= bit
        return bytes(b)

    def bad(data, what, contains=None, path=b"dir/f", key=mk):
        expect_error(lambda: unseal(key, path, data), what, contains)

    for i, contains in [(0, "magic"), (4, "version"), (5, "suite"), (6, "chunker"), (7, "flags"),
                          (8, "wrong key"), (15, "wrong key"), (16, "wrong path"), (23, "wrong path")]:
        bad(flip(base, i), "header bit flip at %d" % i, contains)
    # header suite switched 2 -> 1 (valid value): caught by the tag
    bad(flip(base, 5, 3), "header suite swapped", "tag mismatch")
    r0 = HEADER_LEN
    bad(flip(base, r0 + 4), "tag bit flip", "tag mismatch")
    bad(flip(base, r0 + 19, 0x80), "tag bit flip (last byte)", "tag mismatch")
    bad(flip(base, r0 + 20), "ct bit flip (first byte)", "tag mismatch")
    bad(flip(base, r0 + len(recs[0]) - 1), "ct bit flip (last byte)", "tag mismatch")
    bad(flip(base, r0), "record length changed", None)
    bad(flip(base, r0 + 3, 0x10), "record length out of bounds", "out of bounds")
    for j in range(52):
        bad(flip(base, len(base) - 52 + j), "trailer bit flip at %d" % j)
    bad(header + b"".join(recs[1:]) + trailer, "dropped first chunk", "MAC")
    bad(header + b"".join(recs[:-1]) + trailer, "dropped last chunk", "MAC")
    bad(header + recs[0] + b"".join(recs) + trailer, "duplicated chunk", "MAC")
    bad(header + recs[1] + recs[0] + b"".join(recs[2:]) + trailer, "swapped chunks", "MAC")
    for cut in (0, 10, HEADER_LEN, HEADER_LEN + 2, HEADER_LEN + 30, off, off + 4, off + 51,
                len(base) - 1):
        bad(base[:cut], "truncated at %d" % cut, "truncat")
    bad(header + b"".join(recs), "trailer missing", "trailer missing")
    bad(base + b"\0", "byte after trailer", "after the trailer")
    bad(base + trailer, "trailer twice", "after the trailer")
    bad(base, "wrong path", "wrong path", path=b"dir/g")
    bad(base, "invalid path", "invalid path", path=b"dir/../f")
    bad(base, "wrong key", "wrong key", key=bytes(32))
    # a file moved to another path, header path check patched to match: caught by the tag
    fid_g = file_id(keys, b"dir/g")
    bad(base[:16] + fid_g[:8] + base[24:], "splice to other path with patched header", "tag mismatch",
        path=b"dir/g")
    # chunk spliced in from another file (same key, same path) -> trailer MAC
    other = seal(mk, "xchacha20", b"dir/f", rnd[100000:200000])
    orec = other[HEADER_LEN:HEADER_LEN + 20 + struct.unpack_from("<I", other, HEADER_LEN)[0]]
    bad(header + orec + b"".join(recs[1:]) + trailer, "chunk from another file", "MAC")
    # empty file
    e = seal(mk, "aes256ctr", b"e", b"")
    check(len(e) == HEADER_LEN + TRAILER_LEN and unseal(mk, b"e", e) == b"", "empty file layout")

    # --- names
    for parent, name in [(b"", b"a"), (b"p/q", b"x" * 15), (b"", b"x" * 16), (b"", b"\xff" * 127),
                         (b"r", b"y" * 128), (b"", b"z" * 255)]:
        comp, side, content = seal_name(mk, parent, name)
        check(unseal_name(mk, parent, comp, content) == name, "name round trip %d" % len(name))
        check(len(comp) <= 255 and comp[0] not in "_." if side is None else len(comp) == 33,
              "name form %d" % len(name))
        expect_error(lambda: unseal_name(mk, parent + b"x" if parent else b"other", comp, content),
                     "name wrong parent %d" % len(name), "authenticate")
        expect_error(lambda: unseal_name(bytes(32), parent, comp, content), "name wrong key %d" % len(name))
    check(seal_name(mk, b"", b"a")[0] != seal_name(mk, b"photos", b"a")[0], "names differ per parent")
    check(len(seal_name(mk, b"", b"x" * 127)[0]) == 231, "127-byte name is 231 chars")
    comp, side, content = seal_name(mk, b"", b"y" * 200)
    expect_error(lambda: unseal_name(mk, b"", comp, content[:-1] + ("a" if content[-1] != "a" else "b")),
                 "long name side file tampered", "side file")
    expect_error(lambda: unseal_name(mk, b"", comp, None), "long name side file missing", "missing")
    for badname in (b"", b".", b"..", b"a/b", b"a\x00", b"x" * 256):
        expect_error(lambda: seal_name(mk, b"", badname), "invalid name %r" % badname[:10])
    # a correctly sealed but invalid plaintext name (".."), built by hand, is rejected on unseal
    forged = b32(siv_seal(keys.K_name, b"", pad_name(b"..")))
    expect_error(lambda: unseal_name(mk, b"", forged), "sealed '..' rejected", "invalid name")
    forged = b32(siv_seal(keys.K_name, b"", b"abc" + b"\x00" * 13))
    expect_error(lambda: unseal_name(mk, b"", forged), "bad padding rejected", "padding")

    # --- key files
    plain_kf = write_keyfile_plain(mk, "xchacha20")
    check(parse_keyfile(plain_kf) == (mk, "xchacha20"), "plain key file")
    kid_hex = keys.key_id.hex()
    bad_kid = kid_hex[:-1] + ("0" if kid_hex[-1] != "0" else "1")
    expect_error(lambda: parse_keyfile(plain_kf.replace(kid_hex, bad_kid)), "corrupted key-id", "key-id does not")
    expect_error(lambda: parse_keyfile(plain_kf.replace("master 0", "master 1")), "corrupted master",
                 "key-id does not")
    expect_error(lambda: parse_keyfile(plain_kf[:-1]), "missing final newline")
    wk = write_keyfile_wrapped(mk, "aes256ctr", "pw", bytes(16), bytes(24), m=8, t=1, p=1)
    check(parse_keyfile(wk, b"pw") == (mk, "aes256ctr"), "wrapped key file")
    expect_error(lambda: parse_keyfile(wk, b"pW"), "wrong passphrase", "wrong passphrase")
    expect_error(lambda: parse_keyfile(wk.replace("suite aes256ctr", "suite xchacha20"), b"pw"),
                 "suite line authenticated", "wrong passphrase")
    expect_error(lambda: parse_keyfile(wk.replace("m=8 ", "m=7 "), b"pw"), "kdf limits", "outside")
    expect_error(lambda: parse_keyfile(wk, b""), "empty passphrase", "empty")
    check(read_passphrase_file(b"pw\r\n") == b"pw" and read_passphrase_file(b"pw\n\n") == b"pw\n",
          "passphrase file stripping")

    dt = time.time() - t0
    print("selftest: %d passed, %d failed (%.1fs)" % (passed[0], len(fails), dt))
    return 1 if fails else 0


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write the known-answer vectors")
    g.add_argument("out")
    c = sub.add_parser("check", help="independently unseal a file sealed by the Rust implementation")
    c.add_argument("--key", required=True)
    c.add_argument("--passphrase-file")
    p = c.add_mutually_exclusive_group(required=True)
    p.add_argument("--path", help="relative path (UTF-8)")
    p.add_argument("--path-hex", help="relative path as hex bytes")
    c.add_argument("--sealed", required=True)
    c.add_argument("--plain", required=True)
    c.add_argument("--no-conformance", action="store_true",
                   help="only decrypt and compare; skip the cut-point and compression-rule checks")
    sub.add_parser("selftest", help="round trips and negative checks")
    a = ap.parse_args(argv)
    if a.cmd == "gen":
        cmd_gen(a.out)
        return 0
    if a.cmd == "check":
        return cmd_check(a)
    return selftest()


if __name__ == "__main__":
    sys.exit(main())
