# Sourced by the bench scripts: the generated trees they share.

# Many small files: COUNT files of 100 to MAX (default 4,000) random bytes in FOLDERS (default 500) x 7
# folders (d000/e0 ...), the same bytes on every call (seeded).
small_tree() { # dir count [folders] [max]
  python3 - "$1" "$2" "${3:-500}" "${4:-4000}" <<'PY'
import os, sys, random
root, n, folders, most = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i % folders:03d}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:06d}.txt"), "wb") as f:
        f.write(r.randbytes(r.randint(100, most)))
PY
}
