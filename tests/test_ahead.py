"""Training views made ahead (data/ahead.py), on a background thread or a chunk of batches at a time: the same
views, the generator never ahead."""

import threading
import time

import pytest
import torch

from adaptkd.data import Augment, DataError
from adaptkd.data.ahead import ViewsAhead, ViewsInChunks
from tests.helpers import crash_at_step, tiny_config


def _batches(n: int = 5, b: int = 8):
    g = torch.Generator().manual_seed(3)
    return [(torch.randint(0, 256, (b, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(b) + i)
            for i in range(n)]


def test_views_and_generator_states_are_those_of_the_training_thread():
    aug = Augment([0.5] * 3, [0.25] * 3, crop_padding=2, flip=True)
    batches = _batches()
    seq = torch.Generator().manual_seed(11)
    want = []
    for xb, _ in batches:
        want.append((aug(xb, seq), seq.get_state()))
    gen = torch.Generator().manual_seed(11)
    threads = []

    def make(xb, g):
        threads.append(threading.current_thread())
        return aug(xb, g)

    with ViewsAhead(batches, make, gen) as ahead:
        got = [(xb, yb, v, gen.get_state()) for xb, yb, v in ahead]
    assert len(got) == len(batches)
    for (xb, yb, v, state), (bx, by), (w, ws) in zip(got, batches, want):
        assert torch.equal(xb, bx) and torch.equal(yb, by)
        assert torch.equal(v, w)
        assert torch.equal(state, ws)  # handed out: the state after this batch's draws, not the next one's
    assert threading.main_thread() not in threads


def test_leaving_early_keeps_the_generator_at_the_last_batch_handed_out():
    aug = Augment([0.5] * 3, [0.25] * 3, crop_padding=1, flip=True)
    batches = _batches()
    seq = torch.Generator().manual_seed(5)
    aug(batches[0][0], seq)
    aug(batches[1][0], seq)
    gen = torch.Generator().manual_seed(5)
    with ViewsAhead(batches, aug, gen) as ahead:
        next(ahead)
        next(ahead)  # batch 2 is being prepared now; its draws must not reach gen
    assert torch.equal(gen.get_state(), seq.get_state())


def test_at_most_depth_batches_are_prepared_ahead_and_closing_stops_the_thread():
    aug = Augment([0.5] * 3, [0.25] * 3, crop_padding=1)
    made = []

    def make(xb, g):
        made.append(1)
        return aug(xb, g)

    ahead = ViewsAhead(_batches(8), make, torch.Generator(), depth=2)
    next(ahead)
    deadline = time.monotonic() + 10
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time enough to run further ahead, were it unbounded
    assert len(made) == 3  # the batch handed out and two ahead
    ahead.close()
    assert not ahead._thread.is_alive() and len(made) <= 4
    with pytest.raises(StopIteration):
        next(ahead)


def test_an_error_while_preparing_is_raised_when_its_batch_is_due():
    aug = Augment([0.5], [0.25], crop_padding=1)  # one channel: the batches have three
    with ViewsAhead(_batches(), aug, torch.Generator()) as ahead, pytest.raises(DataError, match="uint8 images"):
        next(ahead)


@pytest.mark.parametrize("chunk", [1, 2, 3, 32])
def test_views_in_chunks_are_those_of_the_training_thread_batch_by_batch(chunk):
    aug = Augment([0.5] * 3, [0.25] * 3, crop_padding=2, flip=True)
    batches = _batches(5) + [(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8), torch.arange(5))]  # a short last
    seq = torch.Generator().manual_seed(11)
    want = [(aug(xb, seq), seq.get_state()) for xb, _ in batches]
    gen = torch.Generator().manual_seed(11)
    got = [(xb, yb, v, gen.get_state())
           for xb, yb, v in ViewsInChunks(batches, lambda b, g: aug.draw(b, "cpu", g), aug.apply, gen, chunk)]
    assert len(got) == len(batches)
    for (xb, yb, v, state), (bx, by), (w, ws) in zip(got, batches, want):
        assert torch.equal(xb, bx) and torch.equal(yb, by)
        assert torch.equal(v, w)
        assert torch.equal(state, ws)  # handed out: the state after this batch's draws, not the chunk's last


def test_views_in_chunks_without_random_parameters_only_normalise():
    aug = Augment([0.5] * 3, [0.25] * 3, crop_padding=2, flip=True, train=False)
    batches = _batches(3)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    views = [v for _, _, v in ViewsInChunks(batches, lambda b, g: aug.draw(b, "cpu", g), aug.apply, gen, 2)]
    assert all(torch.equal(v, aug(xb)) for v, (xb, _) in zip(views, batches))
    assert torch.equal(gen.get_state(), state)


def test_views_are_made_ahead_only_where_it_pays():
    from adaptkd.data.ahead import MIN_PIXELS, pays

    cpu = torch.device("cpu")
    assert not pays(64 * 1 * 8 * 8, cpu) and pays(MIN_PIXELS, cpu) and pays(128 * 3 * 32 * 32, cpu)
    assert not pays(128 * 3 * 32 * 32, torch.device("cuda"))


@pytest.fixture(params=["thread", "chunks of 2", "chunks of 32"])
def always_ahead(request, monkeypatch):
    """The epoch loop's views made ahead, each way: on the background thread (the digits batches of these runs
    are below MIN_PIXELS: made there anyway), or in chunks of 2 batches or of the whole 5-step epoch."""
    if request.param == "thread":
        monkeypatch.setattr("adaptkd.data.ahead.MIN_PIXELS", 0)
    else:
        monkeypatch.setattr("adaptkd.data.ahead.MAX_CHUNK", int(request.param.split()[-1]))
    cls = ViewsAhead if request.param == "thread" else ViewsInChunks
    made = []
    original = cls.__init__

    def init(self, *a, **k):
        made.append(self)
        original(self, *a, **k)

    monkeypatch.setattr(cls, "__init__", init)
    return made


def _cfg(out, **run):
    cfg = tiny_config(out, "kd", teachers=[{"arch": "cnn_tiny", "random_init": True}], data__flip=True)
    cfg["run"].update({"max_steps_per_epoch": 5, "log_every": 1, "device": "cpu", **run})
    return cfg


def test_the_epoch_loop_trains_on_the_views_the_training_thread_would_draw(tmp_path, always_ahead):
    """One epoch through the loop (views made ahead) equals train_step drawing each view itself."""
    from adaptkd.engine.trainer import Trainer

    loop = Trainer(_cfg(tmp_path / "a"), log=lambda s: None)
    loop.train_epoch(1)
    assert len(always_ahead) == 1
    own = Trainer(_cfg(tmp_path / "b"), log=lambda s: None)
    for n in own.learners:
        own.networks[n].train()
    batches = own.pipe.train_batches(1, batch_size=32, seed=0, drop_last=False, stop=own.steps_per_epoch)
    for i, (xb, yb) in enumerate(batches):
        own.train_step(xb, yb, 1, i / own.steps_per_epoch)
        own.global_step += 1
    assert torch.equal(loop.gen.get_state(), own.gen.get_state())
    for a, b in zip(loop.networks["student"].state_dict().values(), own.networks["student"].state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_inside_an_epoch_records_the_generator_before_the_next_batch(tmp_path, always_ahead):
    """Crash after an in-epoch checkpoint, resume: the same records and weights as an uninterrupted run."""
    from adaptkd.engine.logger import read_metrics
    from adaptkd.engine.trainer import Trainer
    from adaptkd.replay.identity import augment_generator

    full = Trainer(_cfg(tmp_path / "full"), log=lambda s: None)
    full.fit()
    crashed = Trainer(_cfg(tmp_path / "part", checkpoint_every_steps=3), log=lambda s: None)
    crash_at_step(crashed, 4)  # the checkpoint at global step 3 is 3 steps into epoch 1
    ck = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    assert ck["in_epoch"]["step"] == 3
    seq = augment_generator(0, 0, torch.device("cpu"))
    for _ in range(3):
        crashed.train_aug.draw(32, "cpu", seq)
    assert torch.equal(ck["rng"]["gen"], seq.get_state())  # before batch 3's draws (made ahead meanwhile)
    resumed = Trainer(_cfg(tmp_path / "part", checkpoint_every_steps=3), resume=True, log=lambda s: None)
    resumed.fit()
    assert len(always_ahead) == 2 + 1 + 2  # two epochs of the full run, one crashed, two resumed
    untimed = [[{k: v for k, v in r.items() if not k.startswith("time/") and not k.endswith("per_s")}
                for r in read_metrics(tmp_path / n / "metrics.jsonl")] for n in ("full", "part")]
    assert untimed[0] == untimed[1]
    for a, b in zip(full.networks["student"].state_dict().values(),
                    resumed.networks["student"].state_dict().values()):
        assert torch.equal(a, b)
