"""A small pure-Python/numpy reference of pstable.SparseTable, written from the spec.

Slow and obvious on purpose: a dict of features, float32 storage, float64 arithmetic in the same
order as the compiled code. The contract suite checks the table against it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
INDEX_SALT = 0x5851F42D4C957F2D
INIT_SALT = 0x243F6A8885A308D3
ADMIT_SALT = 0x13198A2E03707344


def mix64(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def feat_hash(key: int, slot: int) -> int:
    return mix64(key ^ (((slot & 0xFFFFFFFF) * GOLDEN) & MASK) ^ INDEX_SALT)


def init_embedding(key: int, slot: int, seed: int, dim: int, r: float) -> np.ndarray:
    base = mix64(feat_hash(key, slot) ^ mix64(seed ^ INIT_SALT))
    out = np.empty(dim, np.float32)
    for i in range(dim):
        u = (mix64((base + (i + 1) * GOLDEN) & MASK) >> 40) * (1.0 / 16777216.0)
        out[i] = np.float32((2.0 * u - 1.0) * r)
    return out


def admit_draw(key: int, slot: int, seed: int, hour: int) -> float:
    h = feat_hash(key, slot)
    v = mix64((mix64(h ^ mix64(seed ^ ADMIT_SALT)) + (hour & 0xFFFFFFFF) * GOLDEN) & MASK)
    return (v >> 11) * (1.0 / 9007199254740992.0)


# vectorised twins for big tests (numpy uint64 arithmetic wraps)
def _vmix(z):
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def init_embedding_vec(keys, slots, seed, dim, r):
    keys = np.asarray(keys, np.uint64)
    s = np.asarray(slots).astype(np.uint32).astype(np.uint64) * np.uint64(GOLDEN)
    h = _vmix(keys ^ s ^ np.uint64(INDEX_SALT))
    base = _vmix(h ^ np.uint64(mix64(seed ^ INIT_SALT)))
    out = np.empty((keys.shape[0], dim), np.float32)
    for i in range(dim):
        u = (_vmix(base + np.uint64(((i + 1) * GOLDEN) & MASK)) >> np.uint64(40)).astype(np.float64)
        out[:, i] = ((2.0 * (u / 16777216.0) - 1.0) * r).astype(np.float32)
    return out


def _clip(x: float, b: float) -> np.float32:
    return np.float32(b if x > b else (-b if x < -b else x))


class RefTable:
    def __init__(self, cfg):
        self.cfg = cfg
        self.dim = cfg.dim
        self.W = 1 + cfg.dim
        self.rule = str(cfg.optimizer.rule)
        self.policy = str(cfg.admission.policy)
        self.k = {"sgd": 0, "adagrad": 2, "adam": 2 * self.W + 2}[self.rule]
        self.rows: dict = {}     # (slot, key) -> dict(show, click, last_seen, w, st)
        self.pending: dict = {}  # (slot, key) -> dict(show, click, last_seen)
        self.counters = dict(created=0, filtered=0, updated=0, evicted=0, evicted_pending=0)

    # -- rules --------------------------------------------------------------------------------
    def _new_row(self, key, slot, show, click, last_seen):
        o = self.cfg.optimizer
        w = np.zeros(self.W, np.float32)
        w[1:] = init_embedding(key, slot, self.cfg.seed, self.dim, o.initial_range)
        st = np.zeros(self.k, np.float32)
        if self.rule == "adam":
            st[-2] = np.float32(o.beta1)
            st[-1] = np.float32(o.beta2)
        return dict(show=np.float32(show), click=np.float32(click), last_seen=last_seen, w=w, st=st)

    def _divisor(self, push_show):
        """show_scale: the push's gradient sums are divided by its shows, at least 1."""
        return max(float(push_show), 1.0) if self.cfg.optimizer.show_scale else 1.0

    def _apply(self, row, g, push_show):
        o = self.cfg.optimizer
        w, st, W, b, lr = row["w"], row["st"], self.W, o.weight_bounds, o.learning_rate
        div = self._divisor(push_show)
        if self.rule == "sgd":
            for j in range(W):
                w[j] = _clip(float(w[j]) - lr * (float(g[j]) / div), b)
        elif self.rule == "adagrad":
            ig = o.initial_g2sum
            scale = math.sqrt(ig / (ig + float(st[0])))
            g0 = float(g[0]) / div
            w[0] = _clip(float(w[0]) - lr * g0 * scale, b)
            st[0] = np.float32(float(st[0]) + g0 * g0)
            scale = math.sqrt(ig / (ig + float(st[1])))
            acc = 0.0
            for j in range(1, W):
                gj = float(g[j]) / div
                w[j] = _clip(float(w[j]) - lr * gj * scale, b)
                acc += gj * gj
            st[1] = np.float32(float(st[1]) + acc / self.dim)
        else:
            b1, b2 = o.beta1, o.beta2
            b1p, b2p = float(st[2 * W]), float(st[2 * W + 1])
            lr_t = lr * math.sqrt(1.0 - b2p) / (1.0 - b1p)
            eps_t = math.sqrt(1.0 - b2p) * o.epsilon
            for j in range(W):
                gj = float(g[j]) / div
                mf = np.float32(b1 * float(st[j]) + (1.0 - b1) * gj)
                vf = np.float32(b2 * float(st[W + j]) + (1.0 - b2) * gj * gj)
                st[j] = mf
                st[W + j] = vf
                w[j] = _clip(float(w[j]) - lr_t * (float(mf) / (math.sqrt(float(vf)) + eps_t)), b)
            st[2 * W] = np.float32(b1p * b1)
            st[2 * W + 1] = np.float32(b2p * b2)

    def _score(self, show, click):
        return (float(show) - float(click)) * self.cfg.nonclk_coeff + float(click) * self.cfg.click_coeff

    def _admit(self, key, slot, p, hour):
        a = self.cfg.admission
        if self.policy == "none":
            return True
        if self.policy == "count_filter":
            return float(p["show"]) >= a.count
        if self.policy == "probability":
            return admit_draw(key, slot, self.cfg.seed, hour) < a.probability
        return self._score(p["show"], p["click"]) >= a.threshold

    # -- API ----------------------------------------------------------------------------------
    def pull(self, keys, slots):
        out = np.zeros((len(keys), self.W), np.float32)
        for i, (k, s) in enumerate(zip(keys.tolist(), slots.tolist())):
            row = self.rows.get((s, k))
            if row is not None:
                out[i] = row["w"]
        return out

    def push(self, keys, slots, shows, clicks, grads, hour):
        uniq: dict = {}
        for i, (k, s) in enumerate(zip(keys.tolist(), slots.tolist())):
            if (s, k) not in uniq:
                uniq[(s, k)] = [np.float32(shows[i]), np.float32(clicks[i]), grads[i].copy()]
            else:
                u = uniq[(s, k)]
                u[0] = np.float32(u[0] + shows[i])
                u[1] = np.float32(u[1] + clicks[i])
                u[2] = (u[2] + grads[i]).astype(np.float32)
        created = filtered = updated = 0
        for (s, k), (sh, ck, g) in uniq.items():
            row = self.rows.get((s, k))
            if row is not None or self.policy == "none":
                if row is None:
                    row = self.rows[(s, k)] = self._new_row(k, s, 0.0, 0.0, hour)
                    created += 1
                else:
                    updated += 1
                row["show"] = np.float32(row["show"] + sh)
                row["click"] = np.float32(row["click"] + ck)
                row["last_seen"] = max(row["last_seen"], hour)
                self._apply(row, g, sh)
                continue
            p = self.pending.setdefault((s, k), dict(show=np.float32(0), click=np.float32(0),
                                                     last_seen=hour))
            p["show"] = np.float32(p["show"] + sh)
            p["click"] = np.float32(p["click"] + ck)
            p["last_seen"] = max(p["last_seen"], hour)
            if self._admit(k, s, p, hour):
                del self.pending[(s, k)]
                row = self.rows[(s, k)] = self._new_row(k, s, p["show"], p["click"], p["last_seen"])
                self._apply(row, g, sh)
                created += 1
            else:
                filtered += 1
        self.counters["created"] += created
        self.counters["filtered"] += filtered
        self.counters["updated"] += updated
        return (created, filtered, updated)

    def end_day(self, hour):
        rate = np.float32(self.cfg.show_click_decay_rate)
        n = self.cfg.delete_after_unseen_days
        evicted = []
        for feat, row in list(self.rows.items()):
            row["show"] = np.float32(row["show"] * rate)
            row["click"] = np.float32(row["click"] * rate)
            days = (hour - row["last_seen"]) // 24
            if (n > 0 and days > n) or self._score(row["show"], row["click"]) < self.cfg.delete_threshold:
                del self.rows[feat]
                evicted.append(feat)
        for feat, p in list(self.pending.items()):
            p["show"] = np.float32(p["show"] * rate)
            p["click"] = np.float32(p["click"] * rate)
            if n > 0 and (hour - p["last_seen"]) // 24 > n:
                del self.pending[feat]
                self.counters["evicted_pending"] += 1
        self.counters["evicted"] += len(evicted)
        return evicted


def export_as_dict(cols):
    """{(state, slot, key): (show, click, last_seen, weights, opt_state)} of an export."""
    out = {}
    for i in range(len(cols["key"])):
        feat = (int(cols["state"][i]), int(cols["slot"][i]), int(cols["key"][i]))
        out[feat] = (cols["show"][i], cols["click"][i], int(cols["last_seen"][i]),
                     cols["weights"][i], cols["opt_state"][i])
    return out


def assert_same_state(table, ref, atol=0, rtol=0):
    """Full export of `table` equals the reference's rows and pending entries (bit for bit unless
    a tolerance is given)."""
    got = export_as_dict(table.export())
    assert len(table) == len(ref.rows)
    assert table.num_pending == len(ref.pending)
    want_keys = {(0, s, k) for (s, k) in ref.rows} | {(1, s, k) for (s, k) in ref.pending}
    assert set(got) == want_keys
    for (s, k), row in ref.rows.items():
        show, click, last, w, st = got[(0, s, k)]
        np.testing.assert_allclose(show, row["show"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(click, row["click"], rtol=rtol, atol=atol)
        assert last == row["last_seen"]
        np.testing.assert_allclose(w, row["w"], rtol=rtol, atol=atol, err_msg=f"weights of {(s, k)}")
        np.testing.assert_allclose(st, row["st"], rtol=rtol, atol=atol, err_msg=f"opt_state of {(s, k)}")
    for (s, k), p in ref.pending.items():
        show, click, last, w, st = got[(1, s, k)]
        np.testing.assert_allclose(show, p["show"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(click, p["click"], rtol=rtol, atol=atol)
        assert last == p["last_seen"]
        assert not w.any() and not st.any()
