"""Exploration: would a sparse head over *all* SAE latents (not just the database's features) detect better?

Needs the full SAEs of a build (`runs/smollm2-135m-instruct/saes/`, made by `safesail build-db`), so it is not
part of `make bench`. For every prompt (eval test/train splits and the concept pairs) it TopK-encodes the
user tokens at the database's layers with the full SAEs, pools each latent (max and mean over tokens), and fits
an L1 logistic regression (liblinear) on the pairs, or on pairs + the eval train split, scoring AUROC on the
eval test split - for all 3 x 5,760 latents and for the database's latents only.

    python benchmarks/explore_all_latents.py
"""
import json, sys, warnings, numpy as np, torch, time
warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks")
torch.set_num_threads(2)
from bench_detection import auroc
from safesail_guard.runtime.guard import Guard
from safesail_guard.runtime.prompts import watched_mask
from safesail_guard.hooks import HookPoint, StopForward, attach_hooks
from safesail_guard.sae import TopKSAE
from safesail_training.corpus.pairs import load_pairs
g = Guard.from_db()
saes = {ly: TopKSAE.load(f"runs/smollm2-135m-instruct/saes/layers.{ly}.mlp_out/k128") for ly in g.layers}
rows = [json.loads(l) for l in open("benchmarks/data/guard_eval.jsonl")]
train = [r for r in rows if r["split"] == "train"]; test = [r for r in rows if r["split"] == "test"]
pairs = load_pairs()
P = [p.concept for p in pairs] + [p.deconcept for p in pairs]; yP = np.array([1]*len(pairs)+[0]*len(pairs))
@torch.no_grad()
def feats(texts, bs=16):
    n = 5760
    mx = np.zeros((len(texts), 3*n), np.float32); mn = np.zeros((len(texts), 3*n), np.float32)
    encs = [g.encode_prompt(t)[0] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encs[i]))
    for s in range(0, len(order), bs):
        idx = order[s:s+bs]; T = max(len(encs[i]) for i in idx)
        ids = torch.zeros((len(idx), T), dtype=torch.long); mask = torch.zeros_like(ids); w = torch.zeros((len(idx), T), dtype=torch.bool)
        for b, i in enumerate(idx):
            L = len(encs[i]); ids[b,:L] = torch.tensor(encs[i].input_ids); mask[b,:L] = 1; w[b,:L] = torch.tensor(watched_mask(encs[i]))
        got = {}
        def grab(p, a): got[p.layer] = a
        with attach_hooks(g.model, {HookPoint(ly, "mlp_out"): grab for ly in g.layers}, stop_after=True):
            try: g.model(input_ids=ids, attention_mask=mask, use_cache=False)
            except StopForward: pass
        for j, ly in enumerate(g.layers):
            code = saes[ly].encode(got[ly].float())
            dense = torch.zeros(len(idx), T, n).scatter_(-1, code.indices, code.values)
            dense = dense / dense.amax(dim=(0,1), keepdim=True).clamp_min(1)  # rough scale
            dense = dense * w.unsqueeze(-1)
            m = dense.amax(1); me = dense.sum(1) / w.sum(1, keepdim=True).clamp_min(1)
            for b, i in enumerate(idx):
                mx[i, j*n:(j+1)*n] = m[b].numpy(); mn[i, j*n:(j+1)*n] = me[b].numpy()
    return mx, mn
t0 = time.time()
Xte = feats([r["text"] for r in test]); Xtr = feats([r["text"] for r in train]); Xp = feats(P)
print("feats", time.time() - t0, flush=True)
yte = np.array([r["label"] for r in test]); ytr = np.array([r["label"] for r in train])
db_lat = []
for ly_i, ly in enumerate(g.layers):
    for f in g.encoders[ly].feature_ids: db_lat.append(ly_i*5760 + int(f.split("_")[1]))
db_lat = np.array(db_lat)
from sklearn.linear_model import LogisticRegression
def evaluate(name, Xtrain, ytrain, Xtest, C=0.1):
    clf = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", max_iter=2000).fit(Xtrain, ytrain)
    s = clf.decision_function(Xtest)
    print(f"{name} C={C}: AUROC {auroc(s, yte):.3f}, nonzero {(clf.coef_ != 0).sum()}, nonneg share {(clf.coef_ > 0).sum()}", flush=True)
for pool in ("mx", "mn"):
    Xtr_, Xte_, Xp_ = {"mx": (Xtr[0], Xte[0], Xp[0]), "mn": (Xtr[1], Xte[1], Xp[1])}[pool]
    for C in (0.1, 1.0):
        evaluate(f"all latents {pool} pairs", Xp_, yP, Xte_, C)
        evaluate(f"all latents {pool} pairs+train", np.vstack([Xp_, Xtr_]), np.r_[yP, ytr], Xte_, C)
        evaluate(f"db latents {pool} pairs", Xp_[:, db_lat], yP, Xte_[:, db_lat], C)
        evaluate(f"db latents {pool} pairs+train", np.vstack([Xp_, Xtr_])[:, db_lat], np.r_[yP, ytr], Xte_[:, db_lat], C)
