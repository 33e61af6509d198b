"""The demo's HTML page: the metrics table, the contact sheets and every video (looping, autoplaying, muted) with
its prompt and what the scorer read off it. Static, self-contained, relative links only."""
from __future__ import annotations

import html
import re
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; background: #111; color: #ddd; margin: 24px; }
h1, h2 { color: #fff; font-weight: 600; } a { color: #8cf; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #333; padding: 4px 8px; text-align: center; }
th { background: #222; } td.prompt { text-align: left; max-width: 260px; }
video { width: 128px; height: 128px; image-rendering: pixelated; background: #000; display: block; margin: auto; }
.ok { color: #6d6; } .bad { color: #f77; } .tag { font-size: 11px; padding: 1px 4px; border-radius: 3px;
background: #553; color: #fe8; margin-left: 4px; } .small { font-size: 12px; color: #aaa; }
img.sheet { max-width: 100%; image-rendering: pixelated; border: 1px solid #333; }
"""


# counts the media that actually loaded, so a broken link shows on the page itself (and in a headless browser's DOM)
_MEDIA_CHECK = """
<script>
function mediaStatus() {
  const vids = [...document.querySelectorAll('video')], imgs = [...document.querySelectorAll('img')];
  const ready = vids.filter(v => v.readyState >= 2).length, failed = vids.filter(v => v.error).length;
  const shown = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.getElementById('media-status').textContent =
    `media: ${ready}/${vids.length} videos loaded, ${shown}/${imgs.length} images loaded` +
    (failed ? `, ${failed} videos failed` : '');
}
window.addEventListener('load', () => { mediaStatus(); setInterval(mediaStatus, 500); });
</script>
"""


def percent(x) -> str:
    """A fraction as "12.3 %" ("–" for None); shared with the README table generator."""
    return "–" if x is None else f"{100 * x:.1f} %"


def _metrics_table(metrics: dict) -> str:
    rows = []
    for name, e in metrics["pipelines"].items():
        a = e["adherence"]
        fvd = f"{e['fvd']['value']:.0f}" if "fvd" in e else "–"
        strict = e.get("adherence_silhouette_only", {}).get("seen", {}).get("color_motion")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{percent(a.get('seen', {}).get('color_motion'))}</td>"
                    f"<td>{percent(strict)}</td>"
                    f"<td>{percent(a.get('held_out', {}).get('color_motion'))}</td><td>{percent(a['all']['color'])}</td>"
                    f"<td>{percent(a['all']['motion'])}</td><td>{percent(a['all']['shape'])}</td><td>{fvd}</td>"
                    f"<td>{e['seconds_per_video']:.2f}</td></tr>")
    real = metrics["scorer"].get("real_same_prompts")
    floor = f"{metrics['fvd_floor']['value']:.0f}" if metrics.get("fvd_floor") else "–"
    if real:
        rows.append(f"<tr class='small'><td>real clips (same prompts;<br>FVD: a second real set)</td><td>{percent(real.get('seen', {}).get('color_motion'))}"
                    "</td><td>–"
                    f"</td><td>{percent(real.get('held_out', {}).get('color_motion'))}</td><td>{percent(real['all']['color'])}"
                    f"</td><td>{percent(real['all']['motion'])}</td><td>{percent(real['all']['shape'])}</td><td>{floor}</td>"
                    "<td>–</td></tr>")
    head = ("<tr><th>pipeline</th><th>colour+motion<br>seen pairs</th><th>seen pairs,<br>silhouette test only</th>"
            "<th>colour+motion<br>held-out pairs</th>"
            "<th>colour</th><th>motion</th><th>shape</th><th>FVD vs real</th><th>s / video</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _detected_line(detected: dict, video: dict) -> str:
    parts = []
    for key in ("color", "motion", "shape"):
        cls = "ok" if detected.get(key) == video[key] else "bad"
        parts.append(f"<span class='{cls}'>{html.escape(str(detected.get(key)))}</span>")
    return "<div class='small'>" + " · ".join(parts) + "</div>"


def _video_table(metrics: dict) -> str:
    columns = ["real", *metrics["pipelines"]]
    head = "<tr><th>prompt</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
    rows = []
    for v in metrics["videos"]:
        tag = "<span class='tag'>held-out pair</span>" if v["held_out"] else ""
        cells = [f"<td class='prompt'>{html.escape(v['prompt'])}{tag}<div class='small'>seed {v['seed']}</div></td>"]
        for c in columns:
            src = html.escape(v["files"][c])
            cells.append(f"<td><video src='{src}' autoplay loop muted playsinline></video>"
                         f"{_detected_line(v['detected'][c], v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _stories(metrics: dict) -> str:
    """Each pipeline's story: the video, and per segment its prompt and what the scorer read off its last frames."""
    stories = metrics.get("stories")
    if not stories:
        return ""
    first = next(iter(stories.values()))
    head = "<tr><th>pipeline</th><th>story</th>" + "".join(
        f"<th>{i + 1}</th>" for i in range(len(first["segments"]))) + "<th>colour+motion</th></tr>"
    rows = []
    for name, story in stories.items():
        cells = []
        for seg in story["segments"]:
            cls = "ok" if seg["color_motion"] else "bad"
            found = f"{seg['detected'].get('color')} · {seg['detected'].get('motion')}"
            cells.append(f"<td class='small'>{html.escape(seg['expected']['color'])} "
                         f"{html.escape(seg['expected']['motion'])}<div class='{cls}'>{html.escape(found)}</div></td>")
        rows.append(f"<tr><td>{html.escape(name)}</td><td><video src='{html.escape(story['file'])}' autoplay loop "
                    f"muted playsinline></video></td>{''.join(cells)}<td>{percent(story['color_motion'])}</td></tr>")
    return (f"<h2>Stories</h2><p>One prompt every {first['frames_per_segment']} frames ({first['num_frames']} frames, "
            "made chunk by chunk: each chunk is given the last latent frames before it). Per segment: the prompt's "
            "colour and motion, and below it what the scorer reads off the segment's last 17 frames.</p>"
            f"<table>{head}{''.join(rows)}</table>")


def write_page(out: Path, metrics: dict) -> Path:
    """Write ``out/index.html`` for the demo ``metrics`` (as saved in ``metrics.json``)."""
    s = metrics["scorer"]["real_held_out"]
    settings = metrics["settings"]
    sheets = "".join(f"<h3>{html.escape(n)}</h3><img class='sheet' src='{html.escape(e['contact_sheet'])}' "
                     f"alt='{html.escape(n)} contact sheet'>" for n, e in metrics["pipelines"].items())
    body = f"""
<h1>vidgen: text to video on {metrics['machine']['threads']} CPU thread{'s' if metrics['machine']['threads'] != 1 else ''}</h1>
<p>{settings['prompts']} prompts ({settings['held_out_prompts']} with colour&times;motion pairs held out from
training), one {settings['num_frames']}-frame {settings['size']}&times;{settings['size']} video per prompt and pipeline,
made by the pipelines shipped in <code>pretrained/</code>. Created {html.escape(metrics['created'])} in
{metrics['wall_time_s']:.0f} s. Numbers: <a href="metrics.json">metrics.json</a>.</p>
<p id='media-status' class='small'>media: (checking)</p>
<h2>Prompt adherence</h2>
<p>Adherence = the fraction of videos whose colour and motion, read off the pixels by an analytic scorer, match the
prompt. The scorer reads real held-out clips correctly {percent(s['color'])} (colour), {percent(s['motion'])} (motion) and
{percent(s['shape'])} (shape) of the time ({s['n']} clips). A shape counts as rotating only if its silhouette
changes <em>and</em> a rotation brings it back onto its first frame; the "silhouette test only" column scores
without that turn test, which reads a still shape drifting by a fraction of a pixel, or a wobbling one, as rotating.
FVD: I3D Kinetics-400, generated vs real clips of the same
prompts. With this few clips FVD is dominated by sampling noise: the last row's FVD is between two independent
sets of real clips of the same prompts (the floor no generator can go below at this size).</p>
{_metrics_table(metrics)}
<p>Real clip first, then each pipeline, for three seen and three held-out prompts (frames left to right):</p>
<img class='sheet' src='{html.escape(metrics["comparison"])}' alt='real and generated frames side by side'>
{_stories(metrics)}
<h2>Videos</h2>
<p class='small'>Under each video: colour · motion · shape as the scorer reads them (green = matches the prompt).</p>
{_video_table(metrics)}
<h2>Contact sheets</h2>
{sheets}
"""
    page = out / "index.html"
    page.write_text(f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>vidgen demo</title>"
                    f"<style>{_STYLE}</style></head><body>{body}{_MEDIA_CHECK}</body></html>\n")
    return page


def linked_files(page: Path) -> list[Path]:
    """Every local file ``page`` links to (src= / href=), resolved against its folder."""
    text = page.read_text()
    links = re.findall(r"""(?:src|href)=['"]([^'"#]+)['"]""", text)
    return [page.parent / html.unescape(link) for link in links if "://" not in link]
