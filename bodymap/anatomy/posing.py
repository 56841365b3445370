"""Posing a body whose shape is held, through its posed bones only.

anny poses a body by forward kinematics over all 104 bones of its rig (17 depth levels) and
skins every vertex with up to 9 of them: about 200 tensor operations forward and 400 back for
one body, however few bones the pose moves. The registration's fits move 23 (FIT_BONES and
the upper arms' twist children), and while the body's shape is held (the arms' tries) the rest
of the rig is fixed: a bone the pose leaves alone follows its nearest posed ancestor rigidly.
So each vertex is a blend of the posed bones' world transforms alone, with coefficients computed
once per shape:

    v_i = sum_c w_ic T_c [r_i; 1],  T_c = W_a(c) E_c   =>   v_i = sum_a W_a u_ia,
    u_ia = sum_{c: a(c) = a} w_ic E_c [r_i; 1]

(W_a: the posed bone a's world pose; a(c): the nearest posed ancestor of bone c, or c; E_c: the
fixed transform from a(c)'s pose to c's skinning transform). The same vertices as anny's forward
up to float32 rounding (test), in a fifth of the operations.

Conventions are anny's 'local-ref' parameterisation (anny.utils.kinematics.forward_kinematic):
rest poses P_c = [R_c | h_c], reference orientations U_c, each posed bone's delta rotation D_c
in world-aligned axes, W_c = W_p [U_p^T D_c U_c | U_p^T A_p (h_c - h_p)], A_p = U_p R_p^T
(the root's A = I), W_0 = [U_0^T D_0 U_0 | 0], T_c = W_c P_c^-1.
"""
from __future__ import annotations

import numpy as np


class HeldPosing:
    """Posing of one rest body (its shape held) by the rotations of some of its bones.

    model: an anny model (the plain one or a detail model: the same rig); rest: its
    get_rest_model() output for the held shape (rest_vertices (1, n, 3) m, rest_bone_poses
    (1, 104, 4, 4)); posed: indices (k,) of the bones whose rotation is given (the root among
    them), every other bone held at its rest orientation."""

    def __init__(self, model, rest: dict, posed):
        import torch

        self.torch = torch
        posed = [int(b) for b in posed]
        _, _, _, parent = (x.numpy() for x in model.kinematic_chain_indices)
        nb = len(parent)
        P = rest["rest_bone_poses"][0].detach().double().numpy()  # (nb, 4, 4)
        R, h = P[:, :3, :3], P[:, :3, 3]
        U = model.reference_bone_orientations.detach().double().numpy()  # (nb, 3, 3)
        A = np.einsum("bij,bkj->bik", U, R)  # U R^T
        A[0] = np.eye(3)
        # each bone's fixed offset from its parent's pose: K_c = [U_p^T D_c U_c | t_c]
        t = np.einsum("bji,bj->bi", U[parent], np.einsum("bij,bj->bi", A[parent], h - h[parent]))
        t[0] = 0.0
        k = len(posed)
        if 0 not in posed:
            raise ValueError("HeldPosing: the root bone (0) must be among the posed bones")
        slot = np.full(nb, -1, np.int64)  # each posed bone's place in posed, -1 for the others
        slot[posed] = np.arange(k)
        # G_c: bone c's pose relative to its nearest posed ancestor a(c) (identity for a posed
        # bone), parents before children (the kinematic chain's depth order)
        anc = np.zeros(nb, np.int64)
        G = np.zeros((nb, 4, 4))
        for c in model.kinematic_chain_indices[1].numpy():
            if slot[c] >= 0:
                anc[c], G[c] = c, np.eye(4)
                continue
            p = parent[c]
            K = np.eye(4)
            K[:3, :3] = U[p].T @ U[c]
            K[:3, 3] = t[c]
            anc[c], G[c] = anc[p], G[p] @ K
        Pinv = np.zeros((nb, 4, 4))
        Pinv[:, :3, :3] = R.transpose(0, 2, 1)
        Pinv[:, :3, 3] = -np.einsum("bji,bj->bi", R, h)
        Pinv[:, 3, 3] = 1.0
        E = G @ Pinv  # T_c = W_a(c) E_c
        # a posed bone's pose from its posed ancestor's: W_a = W_b G_p [U_p^T D_a U_a | t_a]
        #                                                 = W_b [L_a D_a U_a | c_a]
        L, C, up = np.zeros((k, 3, 3)), np.zeros((k, 3)), np.zeros(k, np.int64)
        for j, a in enumerate(posed):
            if a == 0:
                L[j], up[j] = U[0].T, -1
                continue
            p = parent[a]
            L[j] = G[p][:3, :3] @ U[p].T
            C[j] = G[p][:3, :3] @ t[a] + G[p][:3, 3]
            up[j] = slot[anc[p]]
        depth = np.zeros(k, np.int64)
        for j in range(k):  # (the posed ancestors' depth: a short walk up)
            i = j
            while up[i] >= 0:
                depth[j] += 1
                i = up[i]
        # a bone of depth d (posed ancestors) has its posed ancestor at depth d - 1: the chain is
        # one product per level, in level order (perm), each level's ancestors indexed within the
        # level before it
        levels = [np.flatnonzero(depth == d) for d in range(depth.max() + 1)]
        perm = np.concatenate(levels)
        within = np.empty(k, np.int64)
        for lv in levels:
            within[lv] = np.arange(len(lv))
        bounds = np.cumsum([0] + [len(lv) for lv in levels])
        f32 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)  # noqa: E731
        self._perm = torch.as_tensor(perm)
        self._L, self._Ua = f32(L[perm]), f32(U[posed][perm])
        self._C = f32(np.concatenate([C[perm], np.ones((k, 1))], 1)).unsqueeze(-1)  # (k, 4, 1)
        self._pad = torch.zeros(k, 1, 3)
        self._levels = [(int(bounds[d]), int(bounds[d + 1]), torch.as_tensor(within[up[lv]]))
                        for d, lv in enumerate(levels)]
        self._unperm = torch.as_tensor(np.argsort(perm))
        # each vertex's coefficients u_ia (homogeneous, 4) for the posed bones it reads, at most
        # m of them (padded with zeros), from anny's skinning weights (n, 9)
        w = model.vertex_bone_weights.detach().double().numpy()
        bi = model.vertex_bone_indices.detach().numpy().astype(np.int64)
        n = len(w)
        r = np.concatenate([rest["rest_vertices"][0].detach().double().numpy(), np.ones((n, 1))], 1)
        contrib = w[:, :, None] * np.einsum("nkij,nj->nki", E[bi], r)  # (n, 9, 4)
        s = slot[anc[bi]]  # (n, 9) the posed-bone slot of each weight's bone
        dense = np.zeros((n, k, 4))
        np.add.at(dense, (np.repeat(np.arange(n), w.shape[1]), s.ravel()), contrib.reshape(-1, 4))
        # (n, k * 4): posing is then one product with the posed bones' [R | t] (k * 4, 3)
        self._u = f32(dense.reshape(n, k * 4))

    def vertices(self, D):
        """Posed vertices (n, 3) m of the held body: D (k, 3, 3) torch, the delta rotations of
        the posed bones (in ``posed``'s order, world-aligned axes as anny's 'local-ref'),
        differentiable."""
        torch = self.torch
        Rl = self._L @ D[self._perm] @ self._Ua  # each posed bone's rotation from its posed ancestor's
        local = torch.cat([torch.cat([Rl, self._pad], 1), self._C], 2)  # (k, 4, 4), level order
        W = []
        for first, last, up in self._levels:
            W.append(local[first:last] if not W else W[-1][up] @ local[first:last])
        W = torch.cat(W)[self._unperm, :3]  # (k, 3, 4) world poses, by slot
        return self._u @ W.transpose(1, 2).reshape(-1, 3)


def rotation_matrices(r):
    """Rotation matrices (n, 3, 3) of rotation vectors r (n, 3) rad (torch, differentiable):
    Rodrigues' formula R = (1 - b t^2) I + a [r]x + b r r^T, a = sin t / t, b = (1 - cos t) / t^2
    (t = |r|), b in its half-angle form, exact in float32 down to zero angle (where 1 - cos t
    cancels), about a fifth of the operations of roma's (which switches to first order near 0)."""
    import torch

    t2 = (r * r).sum(-1, keepdim=True)
    t = (t2 + 1e-24).sqrt()  # (a zero vector's gradient stays finite)
    a = torch.sinc(t / torch.pi)  # sin t / t
    b = 0.5 * torch.sinc(t / (2 * torch.pi)) ** 2  # (1 - cos t) / t^2 = 2 sin^2(t/2) / t^2
    x, y, z = r.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=r.dtype).expand(len(r), 3, 3)
    return (1 - b * t2).unsqueeze(-1) * eye + a.unsqueeze(-1) * K + b.unsqueeze(-1) * r.unsqueeze(-1) * r.unsqueeze(-2)


def twist_to_child(r, axes, rows):
    """Rotation matrices (len(r) + n, 3, 3) of rotation vectors r (len(r), 3) rad, the rows
    ``rows`` (n,) split about unit axes (n, 3): those rows keep their swing, and their twists
    follow as n more matrices (R(r) = swing @ twist; the swing-twist split of the unit
    quaternion q = swing * twist, twist's quaternion the normalised projection of q on the
    axis). One Rodrigues call for all; torch, differentiable."""
    import torch

    if not len(rows):
        return rotation_matrices(r)
    q = r[rows]
    t = ((q * q).sum(-1) + 1e-24).sqrt()
    half = 0.5 * torch.sinc(t / (2 * torch.pi))  # sin(t/2) / t: the quaternion is (half * q, cos(t/2))
    phi = 2 * torch.atan2(half * (q * axes).sum(-1), torch.cos(t / 2))
    R = rotation_matrices(torch.cat([r, phi.unsqueeze(-1) * axes]))
    full, twist = R[:len(r)], R[len(r):]
    return torch.cat([full.index_put((rows,), full[rows] @ twist.transpose(1, 2)), twist])
