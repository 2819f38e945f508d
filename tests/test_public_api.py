"""The "bring your own model" API (``import mmrobust_bench as mmr``, the mmrobust_bench/plug package).

Every comparison is against the library itself on a model defined here: ``mmr.attack`` with a torchattacks /
ART class or instance must give what that library gives on the single-input model of the attacked modality
(the others held fixed), or on the concatenated input for a joint attack; ``mmr.evaluate`` must count what a
hand-written loop over the same loader counts.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torchattacks
from art.attacks.evasion import FastGradientMethod
from art.estimators.classification import PyTorchClassifier
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import mmrobust_bench as mmr
from mmrobust_bench.bench.results import COLUMNS, read_rows

K = 3
A_SHAPE, V_SHAPE = (1, 4, 6), (3, 4, 4)  # 4-D batches, as torchattacks' own attacks expect images
N = 12


class Core(nn.Module):
    """The shared weights of every variant below: two encoders, BatchNorm (buffers to watch), a linear head."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fa = nn.Linear(24, 8)
        self.fv = nn.Linear(48, 8)
        self.bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, K)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            self.bn.running_mean.copy_(0.1 * torch.randn(16, generator=gen))
            self.bn.running_var.copy_(1 + 0.1 * torch.rand(16, generator=gen))

    def logits(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.tanh(self.fa(audio.flatten(1))), torch.tanh(self.fv(video.flatten(1)))], 1)
        return self.head(self.bn(h))


class Positional(nn.Module):
    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core

    def forward(self, audio, video):
        return self.core.logits(audio, video)


class KeywordOnly(Positional):
    def forward(self, *, video, audio):
        return self.core.logits(audio, video)


class DictInDictOut(Positional):
    def forward(self, inputs):
        return {"features": None, "logits": self.core.logits(inputs["audio"], inputs["video"])}


class TupleOut(Positional):
    def forward(self, audio, video):
        return torch.zeros(1), self.core.logits(audio, video)


class ObjectOut(Positional):
    def forward(self, audio, video):
        return SimpleNamespace(logits=self.core.logits(audio, video))


class OnlyAudio(nn.Module):
    """What a user would hand torchattacks / ART to attack the audio alone: the video held fixed."""

    def __init__(self, core: Core, video: torch.Tensor) -> None:
        super().__init__()
        self.core, self.video = core, video
        self.eval()  # torchattacks puts a model back in the mode it found it in, submodules included

    def forward(self, x):
        return self.core.logits(x, self.video)


class OnlyVideo(OnlyAudio):
    def __init__(self, core: Core, audio: torch.Tensor) -> None:
        super().__init__(core, audio)

    def forward(self, x):
        return self.core.logits(self.video, x)


class Concatenated(nn.Module):
    """Both modalities as one (B, 1, 1, 72) input: the library's view of a joint ℓ2 attack."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.eval()

    def forward(self, x):
        flat = x.flatten(1)
        return self.core.logits(flat[:, :24].reshape(-1, *A_SHAPE), flat[:, 24:].reshape(-1, *V_SHAPE))


MODALITIES = {"audio": mmr.Modality(A_SHAPE), "video": mmr.Modality(V_SHAPE, box=(0, 1))}


def data(n: int = N, seed: int = 1):
    """Inputs in [0.3, 0.7], so no library [0, 1] clamp and no declared box ever binds at the radii used."""
    gen = torch.Generator().manual_seed(seed)
    audio = 0.3 + 0.4 * torch.rand((n,) + A_SHAPE, generator=gen)
    video = 0.3 + 0.4 * torch.rand((n,) + V_SHAPE, generator=gen)
    return audio, video, torch.randint(0, K, (n,), generator=gen)


@pytest.fixture()
def setup():
    core = Core().eval()
    return core, mmr.wrap(Positional(core), MODALITIES, call="positional"), data()


def classifier(model: nn.Module, shape: tuple[int, ...]) -> PyTorchClassifier:
    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=K, clip_values=None)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)


# --- the package import --------------------------------------------------------------------------------


def test_import_does_not_load_torch():
    code = (
        "import sys, mmrobust_bench as mmr; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert callable(mmr.wrap) and 'torch' in sys.modules; print(mmr.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mmr.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmr.nope  # noqa: B018 (the attribute access is what must raise)


# --- exact agreement with the libraries ----------------------------------------------------------------


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_torchattacks_pgdl2_class_equals_direct_call(setup, modality):
    core, wrapped, (audio, video, y) = setup
    adv_a, adv_v = mmr.attack(
        wrapped,
        (audio, video),
        y,
        attack=torchattacks.PGDL2,
        modality=modality,
        eps=0.3,
        alpha=0.1,
        steps=5,
        random_start=False,
    )
    single, x, kept, got, frozen = (
        (OnlyAudio(core, video), audio, video, adv_a, adv_v)
        if modality == "audio"
        else (OnlyVideo(core, audio), video, audio, adv_v, adv_a)
    )
    direct = torchattacks.PGDL2(single, eps=0.3, alpha=0.1, steps=5, random_start=False)(x, y)
    close(got, direct)
    assert not torch.equal(got, x)
    assert torch.equal(frozen, kept)  # the other modality comes back bit-identical


def test_torchattacks_instances_are_read(setup):
    """A configured instance runs with its own eps/alpha/steps (library defaults included): same as calling it."""
    core, wrapped, (audio, video, y) = setup
    single = OnlyAudio(core, video)
    for instance in (
        torchattacks.FGSM(single, eps=0.05),
        torchattacks.PGDL2(single, eps=0.4, random_start=False),
        torchattacks.PGD(single, eps=0.03, alpha=0.01, steps=4, random_start=False),
    ):
        out = mmr.attack(wrapped, {"audio": audio, "video": video}, y, attack=instance, modality="audio")
        close(out["audio"], instance(audio, y))
        assert torch.equal(out["video"], video)
    # the class gives the library's defaults too (PGDL2: eps=1.0, alpha=0.2, steps=10)
    out = mmr.attack(
        wrapped, (audio, video), y, attack=torchattacks.PGDL2, modality="audio", eps=0.4, random_start=False
    )
    close(out[0], torchattacks.PGDL2(single, eps=0.4, random_start=False)(audio, y))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_art_fast_gradient_method_equals_direct_call(setup, norm):
    core, wrapped, (audio, video, y) = setup
    eps = 0.3 if norm == "l2" else 0.04
    art_norm = 2 if norm == "l2" else np.inf
    single = OnlyVideo(core, audio)
    expected = FastGradientMethod(classifier(single, V_SHAPE), norm=art_norm, eps=eps).generate(
        video.numpy(), y.numpy()
    )
    by_class = mmr.attack(wrapped, (audio, video), y, attack=FastGradientMethod, modality="video", eps=eps, norm=norm)
    instance = FastGradientMethod(classifier(single, V_SHAPE), norm=art_norm, eps=eps)
    by_instance = mmr.attack(wrapped, (audio, video), y, attack=instance, modality="video")
    by_id = mmr.attack(
        wrapped, (audio, video), y, attack="art:FastGradientMethod", modality="video", eps=eps, norm=norm
    )
    for out in (by_class, by_instance, by_id):
        close(out[1], torch.from_numpy(expected))
        assert torch.equal(out[0], audio)


def test_joint_attack_equals_library_on_concatenated_input(setup):
    core, wrapped, (audio, video, y) = setup
    out = mmr.attack(
        wrapped,
        (audio, video),
        y,
        attack=torchattacks.PGDL2,
        modality=["video", "audio"],
        eps=0.5,
        alpha=0.2,
        steps=4,
        random_start=False,
    )
    x = torch.cat([audio.flatten(1), video.flatten(1)], 1).view(N, 1, 1, -1)
    direct = torchattacks.PGDL2(Concatenated(core), eps=0.5, alpha=0.2, steps=4, random_start=False)(x, y).flatten(1)
    close(out[0].flatten(1), direct[:, :24])
    close(out[1].flatten(1), direct[:, 24:])
    delta = torch.cat([(out[0] - audio).flatten(1), (out[1] - video).flatten(1)], 1).norm(dim=1)
    assert float(delta.max()) <= 0.5 + 1e-5
    assert float((out[0] - audio).flatten(1).norm(dim=1).min()) > 0  # one ball shared by both
    assert float((out[1] - video).flatten(1).norm(dim=1).min()) > 0


def test_library_clipping_where_the_box_binds(setup):
    """Clean values on the bounds and radii that leave the box: the library with its own clipping set to the
    box (torchattacks' [0, 1] clamp, ART's clip_values) gives what mmr.attack gives with box=(0, 1)."""
    core, wrapped, _ = setup
    gen = torch.Generator().manual_seed(7)
    audio, video = torch.rand((N,) + A_SHAPE, generator=gen), torch.rand((N,) + V_SHAPE, generator=gen)
    video[:, :, 0], video[:, :, 1] = 1.0, 0.0
    y = torch.randint(0, K, (N,), generator=gen)
    single = OnlyVideo(core, audio)
    art_model = PyTorchClassifier(
        single, loss=nn.CrossEntropyLoss(), input_shape=V_SHAPE, nb_classes=K, clip_values=(0.0, 1.0)
    )
    for eps in (0.5, 2.0):
        out = mmr.attack(
            wrapped,
            (audio, video),
            y,
            attack=torchattacks.PGDL2,
            modality="video",
            eps=eps,
            alpha=eps / 3,
            steps=5,
            random_start=False,
        )
        direct = torchattacks.PGDL2(single, eps=eps, alpha=eps / 3, steps=5, random_start=False)(video, y)
        torch.testing.assert_close(out[1], direct, rtol=0, atol=1e-4)
        out = mmr.attack(wrapped, (audio, video), y, attack=torchattacks.FGSM, modality="video", eps=eps / 10)
        close(out[1], torchattacks.FGSM(single, eps=eps / 10)(video, y))
        out = mmr.attack(wrapped, (audio, video), y, attack=FastGradientMethod, modality="video", eps=eps, norm="l2")
        expected = FastGradientMethod(art_model, norm=2, eps=eps).generate(video.numpy(), y.numpy())
        close(out[1], torch.from_numpy(expected))


# --- any forward, any output -------------------------------------------------------------------------------


def test_forward_and_output_styles_give_identical_results(setup):
    core, _, (audio, video, y) = setup
    variants = [
        mmr.wrap(Positional(core), MODALITIES, call="positional"),
        mmr.wrap(Positional(core), MODALITIES),  # auto: the argument names are the modality names
        mmr.wrap(KeywordOnly(core), MODALITIES),
        mmr.wrap(DictInDictOut(core), MODALITIES, call="dict"),
        mmr.wrap(DictInDictOut(core), MODALITIES, output="logits"),
        mmr.wrap(TupleOut(core), MODALITIES, call="positional", output=1),
        mmr.wrap(ObjectOut(core), MODALITIES, call="positional"),
    ]
    assert [v.call for v in variants] == [
        "positional",
        "keyword",
        "keyword",
        "dict",
        "dict",
        "positional",
        "positional",
    ]
    results = []
    for wrapped in variants:
        for attack in ("pgd_l2", torchattacks.PGDL2):
            results.append(
                mmr.attack(
                    wrapped,
                    {"audio": audio, "video": video},
                    y,
                    attack=attack,
                    modality="all",
                    eps=0.5,
                    steps=3,
                    **({"random_start": False} if attack != "pgd_l2" else {}),
                )
            )
    for i in (0, 1):
        for other in results[2 + i :: 2]:
            assert all(torch.equal(results[i][m], other[m]) for m in ("audio", "video"))


def test_batches_come_back_in_the_users_format(setup):
    _, wrapped, (audio, video, y) = setup
    out = mmr.attack(
        wrapped, {"video": video, "audio": audio, "label": y, "id": "x"}, attack="fgm", modality="audio", eps=0.5
    )
    assert set(out) == {"video", "audio", "label", "id"} and out["id"] == "x" and out["label"] is y
    out = mmr.attack(
        wrapped, [video, y, audio], attack="fgm", modality="audio", eps=0.5, order=("video", "label", "audio")
    )
    assert isinstance(out, list) and out[1] is y and out[0] is video and not torch.equal(out[2], audio)
    single = mmr.wrap(OnlyAudio(Core().eval(), video), {"audio": mmr.Modality()})  # shape inferred
    adv = mmr.attack(single, audio, y, attack="fgm", modality="audio", eps=0.5)
    assert isinstance(adv, torch.Tensor) and adv.shape == audio.shape
    assert single.specs[0].shape == A_SHAPE


def test_state_mode_and_boxes_are_respected():
    core = Core().train()  # train mode: BatchNorm would update its statistics if the attack let it
    gen = torch.Generator().manual_seed(3)
    audio, video = torch.randn((N,) + A_SHAPE, generator=gen), torch.rand((N,) + V_SHAPE, generator=gen)
    video[:, :, 0, 0] = 1.0  # clean values exactly on the bound
    y = torch.randint(0, K, (N,), generator=gen)
    box = ((0.0, 0.0, 0.0), (1.0, 1.0, 0.9))  # per channel
    wrapped = mmr.wrap(Positional(core), {"audio": mmr.Modality(), "video": mmr.Modality(box=box)})
    video[:, 2] = video[:, 2].clamp(max=0.9)
    before = {k: v.clone() for k, v in core.state_dict().items()}
    rng = torch.get_rng_state()
    for attack in (torchattacks.PGDL2, FastGradientMethod, "pgd_l2"):
        out = mmr.attack(wrapped, (audio, video), y, attack=attack, modality="video", eps=2.0, norm="l2")
        assert float(out[1].min()) >= 0 and float(out[1][:, :2].max()) <= 1 and float(out[1][:, 2].max()) <= 0.9
        assert float((out[1] - video).flatten(1).norm(dim=1).max()) <= 2.0 + 1e-5
    assert core.training and all(m.training for m in core.modules())
    assert all(torch.equal(before[k], v) for k, v in core.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in core.parameters())


def test_missing_modality_drop(setup):
    _, wrapped, (audio, video, y) = setup
    out = mmr.attack(wrapped, (audio, video), y, attack="missing", modality="video")
    assert torch.equal(out[0], audio) and torch.equal(out[1], torch.zeros_like(video))
    out = mmr.drop(wrapped, {"audio": audio, "video": video}, modality="audio", fill="noise", noise_std=0.5)
    assert torch.equal(mmr.drop(wrapped, [video, audio], modality="video", order=("video", "audio"))[0], 0 * video)
    assert torch.equal(out["video"], video) and not torch.equal(out["audio"], audio)


# --- evaluate ------------------------------------------------------------------------------------------------


class DictData(Dataset):
    def __init__(self, audio, video, y):
        self.audio, self.video, self.y = audio, video, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"audio": self.audio[i], "video": self.video[i], "label": self.y[i]}


def hand_loop(core: Core, loader_batches, eps: float) -> tuple[int, int, int]:
    """(clean correct, PGDL2-on-audio correct, video-missing correct), counted with the libraries directly."""
    clean = robust = dropped = 0
    for audio, video, y in loader_batches:
        with torch.no_grad():
            clean += int((core.logits(audio, video).argmax(1) == y).sum())
            dropped += int((core.logits(audio, torch.zeros_like(video)).argmax(1) == y).sum())
        adv = torchattacks.PGDL2(OnlyAudio(core, video), eps=eps, alpha=0.2, steps=3, random_start=False)(audio, y)
        with torch.no_grad():
            robust += int((core.logits(adv, video).argmax(1) == y).sum())
    return clean, robust, dropped


def test_evaluate_from_loaders_of_dicts_and_tuples(tmp_path):
    core = Core().eval()
    audio, video, y = data(40, seed=5)
    dict_loader = DataLoader(DictData(audio, video, y), batch_size=16)
    tuple_loader = DataLoader(TensorDataset(video, y, audio), batch_size=16)
    batches = [(audio[i : i + 16], video[i : i + 16], y[i : i + 16]) for i in range(0, 40, 16)]
    grid = [0.3, 1.0]
    expected = {e: hand_loop(core, batches, e) for e in grid}
    results = tmp_path / "results.csv"
    frames = []
    for model, loader, kw in (
        (Positional(core), dict_loader, {}),
        (KeywordOnly(core), tuple_loader, {"order": ("video", "label", "audio")}),
    ):
        model.train()
        wrapped = mmr.wrap(model, {"audio": mmr.Modality(), "video": mmr.Modality(box=(0, 1))})
        frame = mmr.evaluate(
            wrapped,
            loader,
            attack=torchattacks.PGDL2,
            modality="audio",
            eps=grid,
            alpha=0.2,
            steps=3,
            random_start=False,
            label="mine",
            results=results,
            **kw,
        )
        assert model.training  # given back in its own mode
        assert list(frame.columns) == COLUMNS
        assert frame["defense"].tolist() == ["mine"] * 3
        assert frame["attack"].tolist() == ["clean", "torchattacks:PGDL2", "torchattacks:PGDL2"]
        assert frame["modality"].tolist() == ["none", "audio", "audio"] and set(frame["norm"]) == {"l2"}
        assert frame["n"].tolist() == [40] * 3
        assert frame["batch_size"].tolist() == [16] * 3  # the loader's: a randomized attack reseeds per batch
        assert frame["checkpoint_sha256"].nunique() == 1 and len(frame["checkpoint_sha256"][0]) == 64
        assert frame["accuracy"][0] == expected[grid[0]][0] / 40
        assert frame["accuracy"][1:].tolist() == [expected[e][1] / 40 for e in grid]
        frames.append(frame)
        missing = mmr.evaluate(wrapped, loader, attack="missing", modality="video", label="mine", **kw)
        assert pd.isna(missing["eps"][1]) and missing["accuracy"][1] == expected[grid[0]][2] / 40
    assert (
        frames[0]["checkpoint_sha256"][0]
        == frames[1]["checkpoint_sha256"][0]
        == mmr.state_dict_sha256(Positional(core))
    )
    stored = read_rows(results)
    assert len(stored) >= 3 and set(stored["defense"]) == {"mine"}
    listed = mmr.evaluate(wrapped, batches, attack="missing", modality="video", label="mine", check_flags=False)
    assert listed["batch_size"].tolist() == [0, 0]  # a plain list of batches has no batch size: not recorded
    with torch.no_grad():
        core.head.bias.add_(1.0)
    assert mmr.state_dict_sha256(core) != mmr.state_dict_sha256(Core())
    assert mmr.benchmark is mmr.evaluate


def test_evaluate_takes_the_norm_and_eps_of_the_library(setup):
    _core, wrapped, (audio, video, y) = setup
    loader = DataLoader(TensorDataset(audio, video, y), batch_size=6)
    frame = mmr.evaluate(wrapped, loader, attack=torchattacks.FGSM, modality="video", check_flags=False)
    assert frame["norm"].tolist() == ["linf", "linf"] and frame["eps"][1] == pytest.approx(8 / 255)
    frame = mmr.evaluate(wrapped, loader, attack="pgd_l2", modality="audio", check_flags=False)
    assert frame["eps"].tolist() == [0.0, 0.25, 0.5, 1.0, 1.5, 2.0]  # the CLI's default ℓ2 grid
    frame = mmr.evaluate(wrapped, loader, attack="fgm", modality="audio", eps=0.5, check_flags=False)
    assert frame["eps"].tolist() == [0.0, 0.5]


# --- uni-modal scores --------------------------------------------------------------------------------------


class WithUnimodal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(2)
        self.wa = nn.Parameter(torch.randn(K, 24, generator=gen))
        self.wv = nn.Parameter(torch.randn(K, 48, generator=gen))

    def forward(self, audio, video):
        za, zv = audio.flatten(1) @ self.wa.T, video.flatten(1) @ self.wv.T
        return {"logits": za + zv, "unimodal": {"audio": za, "video": zv}}


def test_eta_closed_form_and_clear_error_without_unimodal_scores(setup):
    _, plain, (audio, video, y) = setup
    model = WithUnimodal()
    wrapped = mmr.wrap(model, MODALITIES)
    loader = DataLoader(TensorDataset(audio, video, y), batch_size=5)
    frame = mmr.eta(wrapped, loader)
    for m, w in (("audio", model.wa), ("video", model.wv)):
        pair = (w[:, None] - w[None]).norm(dim=2).detach()  # η_{y,j} = ‖W_y − W_j‖ for a linear score
        expected = float((pair[y].sum(1) / (K - 1)).mean())
        assert frame.set_index("modality").loc[m, "eta_pairs"] == pytest.approx(expected, rel=1e-5)
    assert frame["ratio"][0] == 1.0
    with pytest.raises(ValueError, match=r"eta needs uni-modal scores .* 'unimodal': \{'audio': z_audio"):
        mmr.eta(plain, loader)


def test_certificates_closed_form_for_a_late_fusion_sum():
    """Linear uni-modal scores summed into the logits: the smallest ℓ2 change of modality m that turns y into j
    is (h_y − h_j) / ‖W_y^(m) − W_j^(m)‖ exactly, so Eq. 7 / Eq. 5 have closed forms and PGD breaks nothing."""
    model = WithUnimodal()
    wrapped = mmr.wrap(model, MODALITIES)
    audio, video, _ = data(N, seed=4)
    with torch.no_grad():
        h = model(audio, video)["logits"]
    y = h.argmax(1)
    train = DataLoader(TensorDataset(*data(8, seed=6)), batch_size=4)
    test = DataLoader(TensorDataset(audio, video, y), batch_size=5)
    result = mmr.certificates(wrapped, train, test, radii=(0.1, 1.0), honesty_steps=10)
    frame = result.summary.set_index("certificate")
    margins = h.gather(1, y[:, None]) - h
    diff = {m: (w[:, None] - w[None]).norm(dim=2).detach() for m, w in (("audio", model.wa), ("video", model.wv))}
    dens = {
        "eq7[audio]": diff["audio"],
        "eq7[video]": diff["video"],
        "eq5": (diff["audio"] ** 2 + diff["video"] ** 2).sqrt(),
    }
    for name, den in dens.items():
        ratio = (margins / den[y]).scatter(1, y[:, None], float("inf")).min(1).values
        assert frame.loc[name, "median_radius"] == pytest.approx(float(ratio.median()), rel=1e-4)
        for e in (0.1, 1.0):
            assert frame.loc[name, f"certified_accuracy@{e:g}"] == float((ratio > e).float().mean())
        assert frame.loc[name, "honesty_certified"] == N and frame.loc[name, "honesty_violations"] == 0
        # the per-sample rows are the closed-form radii, and the summary is their statistics
        rows = result.samples[result.samples["certificate"] == name].set_index("sample")
        assert list(rows.index) == list(range(N)) and (rows["label"] == y.tolist()).all()
        assert (rows["prediction"] == rows["label"]).all() and (rows["kind"] == "empirical").all()
        assert rows["radius"].to_numpy() == pytest.approx(ratio.double().numpy(), rel=1e-4)
        for e in (0.1, 1.0):
            assert frame.loc[name, f"certified_accuracy@{e:g}"] == pytest.approx((rows["radius"] > e).mean(), abs=1e-7)
    tidy = result.to_frame()
    assert list(tidy["row"].unique()) == ["sample", "summary"] and len(tidy) == 3 * N + 3
    assert tidy.columns[0] == "row" and tidy.loc[tidy["row"] == "summary", "radius"].isna().all()

    class NotASum(WithUnimodal):
        def forward(self, audio, video):
            out = super().forward(audio, video)
            return {**out, "logits": out["logits"] * 2}

    with pytest.raises(ValueError, match="logits = Σ_m unimodal"):
        mmr.certificates(mmr.wrap(NotASum(), MODALITIES), train, test)
    with pytest.raises(ValueError, match="certificates needs uni-modal scores"):
        mmr.certificates(mmr.wrap(Positional(Core()), MODALITIES), train, test)


# --- errors that name the fix ------------------------------------------------------------------------------


def test_errors_name_the_fix(setup):
    core, wrapped, (audio, video, y) = setup
    with pytest.raises(
        ValueError,
        match=r"your forward takes \(audio, video\).*declare call='positional' with "
        r"modalities in that order",
    ):
        mmr.wrap(Positional(core), {"a": mmr.Modality(), "v": mmr.Modality()})
    with pytest.raises(ValueError, match=r"declared as \(video, audio\)"):
        mmr.wrap(Positional(core), {"video": mmr.Modality(), "audio": mmr.Modality()}, call="positional")
    with pytest.raises(ValueError, match=r"takes \(audio, video\) but 3 modalities"):
        mmr.wrap(Positional(core), ["audio", "video", "flow"], call="positional")
    with pytest.raises(ValueError, match=r"expects a dict .* returns a tensor; drop output="):
        mmr.attack(mmr.wrap(Positional(core), MODALITIES, output="logits"), (audio, video), y, eps=0.5)
    with pytest.raises(ValueError, match="declare output=<index>"):
        mmr.attack(mmr.wrap(TupleOut(core), MODALITIES), (audio, video), y, eps=0.5)
    with pytest.raises(ValueError, match="keys features, logits2 and no 'logits'"):

        class Renamed(DictInDictOut):
            def forward(self, inputs):
                return {"features": None, "logits2": self.core.logits(inputs["audio"], inputs["video"])}

        mmr.attack(mmr.wrap(Renamed(core), MODALITIES), (audio, video), y, eps=0.5)
    with pytest.raises(ValueError, match="unknown modality flow; valid: audio, video"):
        mmr.attack(wrapped, (audio, video), y, modality="flow", eps=0.5)
    with pytest.raises(ValueError, match="no modality video; its keys are audio"):
        mmr.attack(wrapped, {"audio": audio}, y, eps=0.5)
    with pytest.raises(ValueError, match=r"declared with shape .* fix the declaration") as err:
        mmr.attack(wrapped, (audio[:, :, :2], video), y, eps=0.5)
    assert "for a loader of tuples, their order (order=('audio', 'video', 'label'))" in str(err.value)
    loader = [(video, y, audio)]  # a loader of (video, label, audio) tuples read in the declared order
    with pytest.raises(ValueError, match=r"order=\('audio', 'video', 'label'\)"):
        mmr.evaluate(wrapped, loader, attack="fgm", eps=0.5)
    with pytest.raises(ValueError, match="unknown modality flow; valid: audio, video or 'all', or 'any'"):
        mmr.evaluate(wrapped, [(audio, video, y)], attack="fgm", eps=0.5, modality="flow")
    if not torch.cuda.is_available():  # one line naming the fix, not torch's driver message
        with pytest.raises(ValueError, match=r"no CUDA device is available; use the CPU .*device='cpu'"):
            mmr.evaluate(wrapped, [(audio, video, y)], attack="fgm", eps=0.5, device="cuda")
    with pytest.raises(ValueError, match="no labels"):
        mmr.attack(wrapped, (audio, video), eps=0.5)
    with pytest.raises(ValueError, match="needs eps"):
        mmr.attack(wrapped, (audio, video), y, attack="pgd_l2")
    with pytest.raises(TypeError, match="wrap the model first"):
        mmr.attack(Positional(core), (audio, video), y, eps=0.5)
    with pytest.raises(TypeError, match="unknown attack"):
        mmr.attack(wrapped, (audio, video), y, attack=nn.Linear, eps=0.5)
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        mmr.attack(wrapped, (audio, video), y, eps=0.5, norm="l3")
    with pytest.raises(ValueError, match="per-channel box needs 3 values"):
        mmr.attack(
            mmr.wrap(Positional(core), {"audio": mmr.Modality(), "video": mmr.Modality(box=((0, 0), (1, 1)))}),
            (audio, video),
            y,
            eps=0.5,
        )


@pytest.mark.cuda
def test_cuda_model_takes_cpu_loaders_and_matches_cpu():
    """A model on the GPU: evaluate moves each CPU batch to it; the libraries' results agree with the CPU's."""
    core = Core().eval()
    audio, video, y = data(24, seed=9)
    loader = DataLoader(TensorDataset(audio, video, y), batch_size=12)
    frames = []
    for device in ("cpu", "cuda"):
        wrapped = mmr.wrap(Positional(core), MODALITIES).to(device)
        frames.append(
            pd.concat(
                [
                    mmr.evaluate(
                        wrapped, loader, attack=attack, modality="audio", eps=[0.3, 1.0], check_flags=False, **kw
                    )
                    for attack, kw in (
                        (torchattacks.PGDL2, {"random_start": False}),
                        (FastGradientMethod, {"norm": "l2"}),
                    )
                ]
            )
        )
        assert set(frames[-1]["device"]) == {device if device == "cpu" else "cuda:0"}
        out = mmr.attack(
            wrapped,
            (audio.to(device), video.to(device)),
            y.to(device),
            attack=torchattacks.PGDL2,
            modality="video",
            eps=0.5,
            random_start=False,
        )
        assert out[1].device.type == device
    gap = (frames[0]["accuracy"].to_numpy() - frames[1]["accuracy"].to_numpy()) * 24
    assert np.abs(gap).max() <= 1  # float differences between devices may flip at most a borderline sample
