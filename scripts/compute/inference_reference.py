#!/usr/bin/env python3
"""The same MiniLM work as `tensorguard bench embed`, in PyTorch through
sentence-transformers (the model's reference implementation): sentences/s at
batch 1 and batch 32 on the same generated sentences, after one warm-up pass.

    python scripts/compute/inference_reference.py --models target/models --threads 1
"""
import argparse, json, time


def sentence(i):
    subj = ["The robot", "A nurse", "The drone", "Our team", "The arm", "A volunteer", "The sensor", "The model", "A student", "The fleet"]
    verb = ["picked up", "inspected", "moved", "cleaned", "measured", "labelled", "opened", "sorted", "repaired", "photographed"]
    obj = ["the red cube", "a blue drawer", "the kitchen door", "three boxes", "the solar panel", "a broken valve", "the window", "the pallet", "a glass of water", "the charging dock"]
    return f"{subj[i % 10]} {verb[(i // 10) % 10]} {obj[(i // 100) % 10]} at step {i}."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="target/models")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from sentence_transformers import SentenceTransformer
    import sentence_transformers
    t = time.perf_counter()
    m = SentenceTransformer(f"{a.models}/all-MiniLM-L6-v2", device="cpu")
    load_ms = (time.perf_counter() - t) * 1000
    s = [sentence(i) for i in range(a.sentences)]

    def run(batch):
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(s), batch):
                m.encode(s[i:i + batch], batch_size=batch, normalize_embeddings=True)
        return len(s) / (time.perf_counter() - t)
    run(32)
    out = {"engine": f"PyTorch {torch.__version__} + sentence-transformers {sentence_transformers.__version__}", "threads": a.threads,
           "sentences": a.sentences, "load_ms": load_ms, "sentences_per_s": {"batch1": run(1), "batch32": run(32)}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
