"""The ``stemgen`` command. Subcommands are typed functions; their docstrings are the --help."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Union


def chorales(out: Optional[Path] = None, limit: Optional[int] = None, seed: int = 0,
             sample_rate: int = 32000, versions: Optional[list[int]] = None) -> None:
    """Render the embedded Bach-chorale dataset (music21 corpus, GM soundfont) in the Slakh layout.

    Writes OUT/{train,validation,test}/TrackNNNNN/{mix.flac, stems/SNN.flac, MIDI/SNN.mid,
    metadata.yaml}. Deterministic for a seed; complete tracks already in OUT are kept.

    Args:
        out: output folder (default: $STEMGEN_HOME/data/chorales, i.e. ~/.cache/stemgen/...).
        limit: render this many chorales (default: all 353); each split keeps its share.
        seed: seed for the split, instrument programs, tempi and velocities.
        sample_rate: rendering rate in Hz.
        versions: which renderings (default [0], the dataset): K >= 1 adds an augmented copy of
            each training chorale (other instruments, tempo, velocities, transposed by 1-6
            semitones), e.g. ``--versions [1,2,3]`` into a folder of its own for `stemgen data tokens`.
    """
    from .data.chorales import default_chorales_dir, render_chorales

    out = out or default_chorales_dir()
    tracks = render_chorales(out, limit=limit, seed=seed, sample_rate=sample_rate,
                             versions=tuple(versions) if versions else (0,))
    print(f"{len(tracks)} chorales in {out}")


def polyphony(out: Optional[Path] = None, limit: Optional[int] = None, seed: int = 0, seconds: float = 60.0,
              sample_rate: int = 32000) -> None:
    """Render more music to train on: Palestrina's mass movements (music21 corpus), as the chorales are.

    The Slakh layout, a Bass program on the lowest voice, drums from the meter. Writes
    OUT/{train,validation,test}/PalNNNNN/ (the first SECONDS of each piece) and OUT/polyphony.json.
    The movements benchmarks/unseen_music.py tests on are never rendered.
    Tokens for training: `stemgen data tokens TOKENS --data slakh --root OUT`, then
    `--data.extra_train [TOKENS]`.

    Args:
        out: output folder (default: $STEMGEN_HOME/data/palestrina).
        limit: render this many pieces, spread over the corpus (default: all 1303).
        seed: seed for the split, programs, tempi, velocities and drums.
        seconds: rendered length of each piece, from its start.
        sample_rate: rendering rate in Hz.
    """
    from .data.polyphony import default_polyphony_dir, render_polyphony

    out = out or default_polyphony_dir()
    tracks = render_polyphony(out, limit=limit, seed=seed, seconds=seconds, sample_rate=sample_rate)
    print(f"{len(tracks)} pieces in {out}")


def tokens(out: Path, data: str = "chorales", root: Optional[Path] = None, codec: str = "embedded",
           crop_seconds: float = 8.0, draws: int = 8, harmonic_context: bool = False, full_context: float = 0.0,
           min_target_active: float = 0.0, pitched_context: float = 0.0, seed: int = 0) -> None:
    """Compute the tokens of training pairs once, for training without audio (`stemgen-train
    --data tokens --data.root OUT`, e.g. on a GPU machine without the audio packages).

    Writes OUT/train.safetensors (DRAWS random pairs per segment), OUT/validation.safetensors
    (one per segment) and OUT/tokens.json (the codec, the crop length). Training takes windows
    at random offsets inside each crop, so crops longer than the training window add variety.

    Args:
        out: output folder.
        data: chorales, slakh or stems (as for stemgen-train --data).
        root: the dataset (default for chorales: $STEMGEN_HOME/data/chorales, rendered if empty).
        codec: the codec (name or folder) that makes the tokens.
        crop_seconds: length of each pair (the training window must not be longer).
        draws: training pairs per segment of each song.
        harmonic_context: a pitched target never gets a drums-only context.
        full_context: probability that a training pair's context is every other stem (the whole
            mix but the target) instead of a random subset.
        min_target_active: the least fraction of a training crop in which the target sounds (0: only
            a silent target is redrawn, as in the paper; e.g. 0.5 for parts that rest for long).
        pitched_context: probability that a training pair with a pitched target leaves the drums out
            of its context (a mix without a kit; 1 keeps the crops and targets drawn at 0).
        seed: seed of the crops and submixes.
    """
    from .data.datamodule import ChoralesData, SlakhData, StemsData

    kinds = {"chorales": ChoralesData, "slakh": SlakhData, "stems": StemsData}
    if data not in kinds:
        raise ValueError(f"data must be one of {', '.join(kinds)}, got {data!r}.")
    dm = kinds[data](root, codec=codec, crop_seconds=crop_seconds, seed=seed, harmonic_context=harmonic_context,
                     full_context=full_context, min_target_active=min_target_active,
                     pitched_context=pitched_context)
    dm.prepare_data()  # renders the chorales if they are not there yet
    folder = dm.export_tokens(out, draws)
    meta = json.loads((folder / "tokens.json").read_text())
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    print(f"{meta['examples']} examples of {crop_seconds:g} s in {folder} ({size:.1f} MiB)")


def fit(data: Optional[Path] = None, out: Optional[Path] = None, songs: int = 40,
        max_frames: int = 100_000, iters: int = 12, seed: int = 0, half: bool = False) -> None:
    """Fit the embedded codec (residual k-means over log-magnitude STFT frames) on chorales.

    Args:
        data: rendered chorales (default: $STEMGEN_HOME/data/chorales; see `stemgen data chorales`).
        out: output folder (default: $STEMGEN_HOME/codecs/embedded, where load_codec() looks).
        songs: number of training songs to fit on (stems and mixes).
        max_frames: at most this many STFT frames (random subset) for k-means.
        iters: Lloyd iterations per level.
        seed: seed of the frame subset and the k-means initialisation.
        half: store the codebooks as float16 (half the size; how the shipped codec is stored).
    """
    from .codec import default_embedded_dir
    from .prepare import prepare_embedded_codec

    out = out or default_embedded_dir()
    codec = prepare_embedded_codec(data, out, songs=songs, max_frames=max_frames, iters=iters,
                                   seed=seed, force=True, half=half)
    print(f"embedded codec written to {out}: {json.dumps(codec.describe())}")


def roundtrip(audio: Path, out: Optional[Path] = None, codec: str = "embedded",
              plot: Optional[Path] = None) -> None:
    """Encode an audio file to tokens and decode it again (to hear what the codec keeps).

    Args:
        audio: input audio file (wav, flac, ogg; any rate, mono or stereo).
        out: output WAV at the codec's sample rate (default: AUDIO_NAME.decoded.wav here).
        codec: "embedded" (default), "encodec_32khz", or a codec folder/file.
        plot: optional PNG comparing the two spectrograms.
    """
    from .audio import load_mono, write_audio
    from .codec import load_codec

    c = load_codec(codec)
    out = out or Path(f"{Path(audio).stem}.decoded.wav")
    wav = load_mono(audio, c.sample_rate, min_samples=c.hop_length, name="input")
    decoded = c.roundtrip(wav)
    write_audio(out, decoded, c.sample_rate)
    if plot:
        from .plots import spectrogram_figure

        spectrogram_figure({f"original ({audio.name})": wav, f"decoded ({c.name})": decoded},
                           c.sample_rate, plot)
    print(f"wrote {out}" + (f" and {plot}" if plot else ""))


def demo(out: Path = Path("demo_out"), songs: int = 10, seconds: float = 20.0, seed: int = 0,
         model: Optional[str] = None, steps: Optional[list[int]] = None) -> None:
    """Generate a bass and a drums stem for a held-out chorale; write WAVs, the mix and a PNG.

    Args:
        out: folder for the WAVs, demo.png and demo.json.
        songs: chorales to render (one or more are held out from the demo model's training).
        seconds: length of the excerpt.
        seed: seed of the bass (the drums use seed + 1).
        model: the model (default: the shipped demo model).
        steps: decoding steps per level (default: the paper's 128, 64, 32, 32).
    """
    from .demo import run_demo

    summary = run_demo(out, songs=songs, seconds=seconds, seed=seed, model=model, steps=steps)
    print(f"held-out chorale {Path(summary['track']).name}, {summary['seconds']:.1f} s; generation took "
          f"{summary['generation_seconds']['bass']:.0f} s (bass) and {summary['generation_seconds']['drums']:.0f} s (drums)")
    for name, path in summary["files"].items():
        print(f"  {name}: {path}")


def generate(context: Path, instrument: str = "bass", output: Optional[Path] = None, model: Optional[str] = None,
             seed: Optional[int] = None, steps: Optional[list[int]] = None, guidance: Optional[float] = None,
             lambda_context: Optional[float] = None, lambda_instrument: Optional[float] = None,
             naive: bool = False, causal_bias: Optional[float] = None,
             temperature: Union[float, list[float], None] = None, silence_gate: Optional[bool] = None,
             silence_temperature: Optional[float] = None, overlap: float = 1.0, keep: Optional[Path] = None,
             regenerate: Optional[list[float]] = None,
             mix: Optional[Path] = None, plot: Optional[Path] = None,
             device: Optional[str] = None, sampler: Optional[str] = None, compile: Optional[bool] = None) -> None:
    """Generate a stem that fits CONTEXT (a wav/flac/ogg file; any rate, mono or stereo).

    Example: stemgen generate song.wav --instrument bass -o bass.wav --mix mix.wav --plot bass.png

    Sampling options left out keep the paper's best setting (or, with --naive, the naive one).

    Args:
        context: the music to listen to.
        instrument: the stem to generate: bass, drums, piano, guitar, strings, organ, brass, reed,
            pipe, synth lead, synth pad, ... (see stemgen.instruments.valid_names()).
        output: the stem's WAV (default: INSTRUMENT.wav); also -o.
        model: "demo" (default, the shipped chorale model), an exported folder, a .ckpt from
            stemgen-train, or a hub id (default also from $STEMGEN_MODEL).
        seed: random seed; the same seed reproduces the stem (printed when omitted).
        steps: decoding steps per level, e.g. [128,64,32,32] (the paper's; fewer is faster).
        guidance: classifier-free guidance scale for both sources (paper: 3.0; 1.0 is no
            guidance in the paper's sense).
        lambda_context: guidance scale of the context alone (overrides --guidance).
        lambda_instrument: guidance scale of the instrument alone (overrides --guidance).
        naive: the paper's naive sampling: no guidance, no causal bias.
        causal_bias: position weight w_s of the candidate ranking (paper: 0.1; 0 = VampNet-like).
        temperature: sampling temperature, one for every level or one per level, e.g.
            [0.5,1,1,1] (paper: 1.0; 0 = greedy).
        silence_gate: temper whether the stem sounds apart from what it plays, so that a low
            temperature does not make silence the likeliest draw (default: on).
        silence_temperature: the silence gate's own temperature (default: the level's); lower
            keeps a stem from falling silent where the model thinks it probably sounds.
        overlap: seconds of overlap between windows for contexts longer than the model's window.
        keep: a stem (audio file) to keep: continued to the end of CONTEXT if shorter, or with
            --regenerate, kept outside that span. It is encoded by the model's codec first, so
            what is kept is the codec's reading of that audio, not the exact tokens of a stem it
            was decoded from (decoding and re-encoding is not an identity).
        regenerate: [start, end] seconds of --keep to generate again (inpainting).
        mix: also write the stem mixed with the context here.
        plot: also write a PNG of the context, stem and mix spectrograms here.
        device: cpu or cuda (default: cuda when available).
        sampler: "fused" (default: the torch.ops.stemgen kernels, and the fused attention on a
            CPU: bf16 with AVX512-BF16, float32 with AVX2) or "eager" (the reference functions); the
            same seed gives the same stem with either, except where the fused attention's rounding
            tips a near-tie (in bf16 about 0.5% of a stem's tokens; far fewer in float32).
        compile: compile each decoding step with torch.compile (CUDA: captured as a CUDA graph);
            the first level pays the compilation.
    """
    from .api import load_model
    from .instruments import resolve
    from .sampling.settings import SamplingSettings

    inst = resolve(instrument)  # a typo fails here, before anything is loaded
    scales = (lambda_context, lambda_instrument, guidance)
    if naive and any(x is not None for x in scales):
        raise ValueError("--naive samples without guidance: drop --guidance/--lambda_context/--lambda_instrument, "
                         "or drop --naive.")
    settings = SamplingSettings.naive() if naive else None
    m = load_model(model, device=device)
    if any(x is not None for x in scales):
        base = m.settings(settings)
        guidance = (_first_given(lambda_context, guidance, base.lambda_context),
                    _first_given(lambda_instrument, guidance, base.lambda_instrument))
    print(f"{m}\ngenerating {inst.name.lower()} for {context} ...", file=sys.stderr)
    stem = m.generate(context, inst, seed=seed, settings=settings, steps=steps, guidance=guidance,
                      causal_bias=causal_bias, temperature=temperature, silence_gate=silence_gate,
                      silence_temperature=silence_temperature, sampler=sampler, compile=compile,
                      overlap_seconds=overlap, keep=keep, regenerate=tuple(regenerate) if regenerate else None,
                      progress=True)
    output = output or Path(f"{stem.instrument.lower().replace(' ', '_')}.wav")
    written = [stem.save(output)]
    if mix:
        written.append(stem.save_mix(mix))
    if plot:
        from .plots import spectrogram_figure

        spectrogram_figure({f"context ({Path(context).name})": stem.context,
                            f"generated {stem.instrument} (seed {stem.settings['seed']})": stem.audio,
                            "mix": stem.mix()}, stem.sample_rate, plot)
        written.append(Path(plot))
    print(f"{stem.instrument}, {stem.duration:.1f} s, seed {stem.settings['seed']}: "
          + ", ".join(str(p) for p in written))


def _first_given(*values):
    return next(v for v in values if v is not None)


def _export_settings(path: Path) -> dict:
    """The ``sampling`` / ``instrument_sampling`` of an export settings file (JSON), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--settings {path}: file not found (a JSON file with the keys "
                                f"'sampling' and/or 'instrument_sampling', e.g. configs/gpu_export_shipped.json).")
    try:
        fields = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--settings {path} is not valid JSON ({err}); fix the file.") from None
    # the keys it should not have, or what it is instead of an object
    unknown = sorted(set(fields) - {"sampling", "instrument_sampling"}) if isinstance(fields, dict) else type(fields).__name__
    if unknown:
        raise ValueError(f"--settings {path} must hold an object whose keys are 'sampling' and/or "
                         f"'instrument_sampling'; it has {unknown}.")
    return fields


def export(checkpoint: Path, out_dir: Path, half: bool = False, max_shard_mib: Optional[float] = None,
           sampling: Optional[dict] = None, instrument_sampling: Optional[dict] = None,
           settings: Optional[Path] = None) -> None:
    """Export a stemgen-train checkpoint as model.safetensors + config.json (safe to share).

    The checkpoint is read with torch.load(weights_only=True); the export records the model
    shape, the codec the model was trained with, its training window and step. A fitted
    embedded codec is copied into OUT_DIR/codec so the export is self-contained.

    Args:
        checkpoint: a .ckpt file written by stemgen-train.
        out_dir: output folder (stemgen.load_model reads it).
        half: store weights and codebooks as float16 (half the size).
        max_shard_mib: split the weights into files of at most this many MiB
            (model-0000k-of-0000n.safetensors + model.safetensors.index.json).
        sampling: the decoding settings the model generates with by default, as the fields of
            SamplingSettings that differ from the paper's best, e.g. '{"guidance_form": "nested"}'
            (choose them with benchmarks/listening.py).
        instrument_sampling: instruments that generate with settings of their own, each as such
            fields, e.g. '{"drums": {}}' (drums with the paper's best whatever --sampling says).
        settings: a JSON file holding both of the above as its keys "sampling" and
            "instrument_sampling" (the shipped model's: configs/gpu_export_shipped.json); a
            --sampling or --instrument_sampling given as well replaces the file's.
    """
    from .train.export import export_checkpoint

    if settings is not None:
        fields = _export_settings(settings)
        sampling = fields.get("sampling") if sampling is None else sampling
        instrument_sampling = fields.get("instrument_sampling") if instrument_sampling is None else instrument_sampling

    limit = int(max_shard_mib * 2**20) if max_shard_mib else None
    folder = export_checkpoint(checkpoint, out_dir, half=half, max_shard_bytes=limit, sampling=sampling,
                               instrument_sampling=instrument_sampling)
    print(f"exported {checkpoint} -> {folder}")


def ensemble(out_dir: Path, members: List[Path], combine: str = "mixture", codec: Optional[Path] = None,
             instrument_members: Optional[dict] = None, null_instrument_members: Optional[List[int]] = None) -> None:
    """Join exported models into one ensemble export: at every decoding step the members'
    distributions are combined, so training runs that err differently answer together (at one
    forward pass per member).

    The members must be trained on the same codec's tokens and window (runs of one recipe with
    other seeds); the ensemble takes the first member's codec and sampling settings. Load it as
    any export (stemgen.load_model(OUT_DIR), stemgen generate --model OUT_DIR).

    Args:
        out_dir: output folder (config.json, codec/, member-1/, member-2/, ...).
        members: exported model folders (stemgen export), the first one's settings kept.
        combine: "mixture" (the mean of the members' probabilities) or "product" (their
            normalised geometric mean: sharper where they agree).
        codec: the codec folder the members were trained with, for members exported without
            theirs (a GPU run's export); default: the first member's bundled codec.
        instrument_members: instruments that only some members generate, by member number
            (from 1, as given), e.g. '{"drums": [1]}': the drums from the first member alone.
        null_instrument_members: members (by number) that answer only the instrument-free
            guidance branches p(t|a) and p(t), e.g. '[2]': a network trained for that branch
            serves it while the others generate every instrument (docs/listening.md).
    """
    from .model.io import save_ensemble

    folder = save_ensemble(members, out_dir, combine=combine, codec=codec, instrument_members=instrument_members,
                           null_instrument_members=null_instrument_members)
    print(f"wrote an ensemble of {len(members)} models ({combine}) -> {folder}")


def bench_mirdd(grid: Path, out: Path = Path("bench_out"), model: Optional[str] = None,
                data: Optional[Path] = None, n: int = 40, seconds: float = 8.0, split: str = "test",
                batch_size: int = 8, seed: int = 0, rounds: int = 200, vggish: Optional[str] = None,
                precision: str = "auto") -> None:
    """Run a benchmark grid (the paper's protocol): generate one stem per held-out triple per
    configuration, score MIRDD, Fréchet distances and context agreement.

    Writes OUT/results.{json,csv,md}, OUT/metrics_by_setting.png and a real-vs-generated
    descriptor histogram PNG; generated stems are cached in OUT/generated/, so a rerun resumes.

    Args:
        grid: a YAML grid, e.g. configs/eval/table2_causal_bias.yaml.
        out: output folder.
        model: the model (default: the demo model or $STEMGEN_MODEL).
        data: dataset root (default: the embedded chorales, all 353 rendered if needed).
        n: number of (context, instrument, real stem) triples (the paper: 400).
        seconds: length of each triple.
        split: the held-out split to draw from.
        batch_size: stems generated per batch.
        seed: generation seed.
        rounds: bootstrap rounds for the MIRDD intervals.
        vggish: VGGish weights file (FAD is reported only with real VGGish weights).
        precision: the model's precision: "auto" (bf16 where the CPU or GPU has it natively, else
            fp32), "bf16" or "fp32"; grids run at different precisions are different runs, so
            compare models at one (the generated-stem cache keeps them apart).
    """
    from .eval.suite import run_suite

    run_suite(grid, out, model=model, data=data, n=n, seconds=seconds, split=split, batch_size=batch_size,
              seed=seed, rounds=rounds, vggish_weights=vggish, precision=precision)
    print((Path(out) / "results.md").read_text())


def bench_folders(real: Path, generated: Path, context: Optional[Path] = None, out: Optional[Path] = None,
                  rounds: int = 200, vggish: Optional[str] = None) -> None:
    """Score a population of generated stems against real ones: MIRDD, Fréchet distances and
    (with contexts) context agreement.

    REAL and GENERATED may hold different files and different numbers of them (populations are
    compared); with CONTEXT, each stem's context is CONTEXT/NAME, its own file name. Metrics that
    cannot be computed (VGGish FAD without weights, context agreement without contexts) are
    listed under "not_computed" with the reason.

    Args:
        real: the real stems.
        generated: the generated stems.
        context: the context mixes, named as the stems they belong to (MIRDD then scores stem +
            context, as the paper does; context agreement is measured for the generated stems
            and, as the reference, the real ones).
        out: folder for results.json (optional).
        rounds: bootstrap rounds.
        vggish: VGGish weights file.
    """
    from .eval.suite import score_folders

    r = score_folders(real, generated, context, out, rounds=rounds, vggish_weights=vggish)
    print(json.dumps({k: v for k, v in r.items() if k != "mirdd"} | {"mirdd": r["mirdd"]["mirdd"]}, indent=1))


COMMANDS = {
    "data": {"_help": "Prepare datasets: render the embedded Bach chorales (or Palestrina, to train on "
                      "more music) to stems; tokens for training.",
             "chorales": chorales, "polyphony": polyphony, "tokens": tokens},
    "codec": {"_help": "The embedded codec: fit it on chorales, or hear what it keeps of a file.",
              "fit": fit, "roundtrip": roundtrip},
    "generate": generate,
    "bench": {"_help": "Evaluate: the paper's MIRDD protocol over a grid, or score two folders of audio.",
              "mirdd": bench_mirdd, "folders": bench_folders},
    "demo": demo,
    "export": export,
    "ensemble": ensemble,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stemgen`` command."""
    from jsonargparse import CLI

    from .errors import StemgenError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--output" if a == "-o" else a for a in argv]  # `stemgen generate X -o out.wav`
    try:
        CLI(COMMANDS, args=argv, prog="stemgen",
            description="stemgen: music stem generation that listens (StemGen).")
    except (StemgenError, FileNotFoundError, ValueError) as err:
        print(f"stemgen: error: {err}", file=sys.stderr)
        return 2
    return 0
