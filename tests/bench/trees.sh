# Sourced by the bench scripts: the generated trees they share.

# Many small files: COUNT files of 100-4,000 random bytes in 500 x 7 folders (d000/e0 ...), the same bytes on
# every call (seeded).
small_tree() { # dir count
  python3 - "$1" "$2" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2]); r = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i % 500:03d}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:06d}.txt"), "wb") as f:
        f.write(r.randbytes(r.randint(100, 4000)))
PY
}
