"""A distilled student's reads against its ship rule, in step order: the curve.

Each read is an ``eval/distill_tuning.py`` results file of one checkpoint's weights, in which the teacher was read
in the same run on the same prompts. The rule is the one the distillation configs fix before their first step
(``configs/shapes-flow-distilled/stage1.yaml``, ``experiments/configs/distill/dmd2_stage8.yaml``): the student ships
at the smallest step count k whose seconds per video at batch 1 are at most 1/10 of the teacher's, and whose
colour+motion and shape are each no more than 2 points below the teacher's. The first read that passes ships.

For every read and every k this writes each check and how far it is missed (points of the prompts; 0 where met),
what each asked-for shape was read as (where the read file has it), and for the run as a whole the closest read:
among the reads' k that meet the speed, the one with the least shortfall in points, and where its shapes differ from
the teacher's (which shapes it draws less often, and what it draws instead). Beside the JSON it draws the
curve (``.png``): colour+motion and shape at each k against steps, with the teacher's values and the rule's lines.

    python experiments/student_read.py 1000=experiments/results/distill_tuning_dmd2_stage8_step1000_192.json \\
        1900=experiments/results/distill_tuning_dmd2_stage8_step1900_192.json \\
        --out experiments/results/student_read_dmd2_stage8.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402

POINTS, SPEEDUP = 0.02, 10.0
RULE = ("the smallest step count k whose s/video at batch 1 is at most 1/10 of the teacher's and whose colour+motion "
        "and shape are each no more than 2 points below the teacher's (both read in the same run)")


def judge(student: dict, teacher: dict) -> dict:
    """One student row (one k) against the teacher's row of the same read: each check, and how far it is missed."""
    def points_short(key: str) -> float:
        return round(100 * max(0.0, teacher[key] - POINTS - student[key]), 2)

    short = {"speedup": round(max(0.0, SPEEDUP - student["speedup_batch_1"]), 2),
             "color_motion_points": points_short("color_motion"), "shape_points": points_short("shape")}
    checks = {"speed": short["speedup"] == 0, "color_motion": short["color_motion_points"] == 0,
              "shape": short["shape_points"] == 0}
    return {"checks": checks, "passes": all(checks.values()), "short_by": short}


def read_row(step: int, path: Path, student: str) -> dict:
    """One read: the teacher's values and, per k, the student's with the rule's verdict."""
    record = json.loads(path.read_text())
    teachers = [r for r in record["rows"] if r["name"] == "teacher"]
    students = sorted((r for r in record["rows"] if r["name"] == student), key=lambda r: r["steps"])
    if len(teachers) != 1 or not students:
        raise SystemExit(f"{path}: needs one 'teacher' row and rows named {student!r} "
                         f"(it has {sorted({r['name'] for r in record['rows']})})")
    teacher = teachers[0]
    ks = [{"steps": r["steps"], "color_motion": r["color_motion"], "shape": r["shape"],
           "turned": r.get("turns", {}).get("turned"), "speedup_batch_1": r["speedup_batch_1"], **judge(r, teacher),
           **({"shapes": r["shapes"]} if "shapes" in r else {})}
          for r in students]
    ships = next((k["steps"] for k in ks if k["passes"]), None)
    resolved = path.resolve()
    return {"step": step, "file": resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path),
            "commit": record.get("commit"), "weights_sha256": students[0]["weights_sha256"], "note": record.get("note"),
            "precision": record.get("precision"), "prompts": record["prompts"],
            "prompt_seed": record.get("prompt_seed"),
            "teacher": {"steps": teacher["steps"], "color_motion": teacher["color_motion"],
                        "shape": teacher["shape"], "turned": teacher.get("turns", {}).get("turned"),
                        "turns_of": teacher.get("turns", {}).get("n"),
                        **({"shapes": teacher["shapes"]} if "shapes" in teacher else {})},
            "k": ks, "ships_at_k": ships}


def shapes_against_teacher(student: dict, teacher: dict) -> dict | None:
    """Where a student's shape read differs from its teacher's: per asked-for shape, the videos drawn right by each
    (the difference, student minus teacher) and the shapes the student's videos were read as more often than the
    teacher's; the worst shape first. None when either row lacks the per-shape reads."""
    if "shapes" not in student or "shapes" not in teacher:
        return None
    out = {}
    for name, own in student["shapes"].items():
        theirs = teacher["shapes"].get(name, {"right": "0/0", "read_as": {}})
        right, asked = map(int, own["right"].split("/"))
        teacher_right = int(theirs["right"].split("/")[0])
        more = {other: n - theirs["read_as"].get(other, 0) for other, n in own["read_as"].items()
                if n > theirs["read_as"].get(other, 0)}
        out[name] = {"asked": asked, "right": right, "teacher_right": teacher_right,
                     "difference": right - teacher_right, "read_as_more_than_teacher": more}
    return dict(sorted(out.items(), key=lambda item: (item[1]["difference"], item[0])))


def closest(rows: list[dict]) -> dict | None:
    """The read and k that meet the speed with the least shortfall in points (the later read on a tie), with where
    its shapes differ from the teacher's when the read has the per-shape reads."""
    fast = [(row, k) for row in rows for k in row["k"] if k["checks"]["speed"]]
    if not fast:
        return None
    row, k = min(fast, key=lambda rk: (rk[1]["short_by"]["color_motion_points"] + rk[1]["short_by"]["shape_points"],
                                        -rk[0]["step"]))
    shapes = shapes_against_teacher(k, row["teacher"])
    return {"step": row["step"], "steps": k["steps"], "short_by": k["short_by"], "passes": k["passes"],
            **({"shapes_against_teacher": shapes} if shapes is not None else {})}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Colour+motion (left) and shape (right) at each k against steps; the teacher (its last read) dotted, the rule
    dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in zip(axes, ("color_motion", "shape"), ("colour+motion", "shape")):
        teacher = 100 * rows[-1]["teacher"][key]  # each read judges against its own run's teacher; drawn: the last
        ax.axhline(teacher, ls=":", color="black", label="teacher")
        ax.axhline(teacher - 100 * POINTS, ls="--", color="black", lw=1, label="rule")
        for i, k in enumerate(sorted({k["steps"] for r in rows for k in r["k"]})):  # every k drawn, colours cycled
            colour = ("tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple")[i % 5]
            pts = [(r["step"], 100 * x[key]) for r in rows for x in r["k"] if x["steps"] == k]
            ax.plot(*zip(*pts), "o-", color=colour, label=f"{k} step{'s' * (k > 1)}")
        ax.set(xlabel="training step", ylabel=f"% of {rows[0]['prompts']} tuning prompts", title=label, ylim=(0, 100))
        ax.set_xlim(0, max(steps) * 1.1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reads", nargs="+", metavar="STEP=FILE", help="a training step and its distill_tuning file")
    parser.add_argument("--student", default="dmd2", help="the student's row name in the read files")
    parser.add_argument("--title", default="Student reads against the ship rule")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    for item in args.reads:
        step, sep, file = item.partition("=")
        if not sep or not step.isdigit() or not Path(file).is_file():
            parser.error(f"{item!r}: expected STEP=FILE with an integer step and an existing file")
        rows.append(read_row(int(step), Path(file), args.student))
    rows.sort(key=lambda r: r["step"])
    if len({(r["prompts"], r["prompt_seed"]) for r in rows}) > 1:
        raise SystemExit("the reads were made on different prompts: "
                         + ", ".join(f"step {r['step']}: {r['prompts']} (seed {r['prompt_seed']})" for r in rows))
    ships = next((r for r in rows if r["ships_at_k"] is not None), None)
    payload = {"rule": RULE, "student": args.student, "rows": rows, "closest": closest(rows),
               "ships": None if ships is None else {"step": ships["step"], "steps": ships["ships_at_k"]}}
    write_result(args.out, payload, weights=(), precision="/".join(sorted({str(r["precision"]) for r in rows})))
    plot(rows, args.out.with_suffix(".png"), args.title)
    for r in rows:
        ks = "  ".join(f"k={k['steps']}: {k['color_motion']:.1%} / {k['shape']:.1%} ({k['speedup_batch_1']:.1f}x)"
                       for k in r["k"])
        print(f"step {r['step']:5d}: teacher {r['teacher']['color_motion']:.1%} / {r['teacher']['shape']:.1%}  {ks}"
              f"  {'ships at k=%d' % r['ships_at_k'] if r['ships_at_k'] else 'does not ship'}")
    print(f"closest: {payload['closest']}\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
