"""The leaderboard page's markup: its HTML template (Jinja2, autoescaped: every name and value from the rows is text,
never markup), its inline style and sort script, and the Content-Security-Policy that lets only those two run."""

from __future__ import annotations

import base64
import hashlib

import jinja2

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 4px}
p.meta{color:#555;font-size:12px;margin:2px 0 10px;max-width:80em} p.links{font-size:13px;margin:2px 0 6px}
table.board{border-collapse:separate;border-spacing:0;font-size:13px;display:block;max-width:100%;overflow-x:auto;
font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap;background:#fff}
th{background:#1f4e79;color:#fff;white-space:normal;min-width:4.5em;max-width:9.5em;vertical-align:bottom;
font-weight:600} #leaderboard th{cursor:pointer;user-select:none}
th.headline{background:#123456} th.rankkey{background:#0b2540} th.cert{background:#2d6a4f}
th .sub{display:block;font-weight:400;font-size:11px;opacity:.9}
th.text,td.text{text-align:left} th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"} tr:nth-child(even) td{background:#f3f6fa}
#leaderboard th:first-child,#leaderboard td:first-child{position:sticky;left:0;z-index:1;box-shadow:1px 0 0 #ccc}
#leaderboard th:first-child{z-index:2}
td code.id{display:block;font-size:11px;color:#666}
td .sd{color:#777;font-size:11px} td .kind{color:#555;font-size:11px;margin-left:3px;cursor:help}
a{color:#1f4e79} ul.notes{font-size:12px;color:#444} .em{font-weight:700}
td.flagged{background:#fff4e0} tr:nth-child(even) td.flagged{background:#fbecd2}
.flag{color:#b35900;cursor:help;margin-left:3px} dl.legend{font-size:12px;color:#444;margin:4px 0}
dl.legend dt{font-family:monospace;float:left;clear:left;width:170px} dl.legend dd{margin:0 0 2px 180px}
"""

JS = """
(function(){
  var table=document.getElementById('leaderboard'), body=table.tBodies[0];
  function sortBy(key, dir){
    var th=null;
    Array.prototype.forEach.call(table.querySelectorAll('th'),function(h){if(h.dataset.key===key){th=h;}});
    if(!th){return;}
    var idx=Array.prototype.indexOf.call(th.parentNode.children, th), num=th.dataset.type==='num';
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[idx].dataset.value, y=b.cells[idx].dataset.value;
      if(num){x=x===''?NaN:parseFloat(x); y=y===''?NaN:parseFloat(y);
        if(isNaN(x)&&isNaN(y)){return 0;} if(isNaN(x)){return 1;} if(isNaN(y)){return -1;}
        return dir==='asc'?x-y:y-x;}
      return dir==='asc'?x.localeCompare(y):y.localeCompare(x);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.querySelectorAll('th'),function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort', dir==='asc'?'ascending':'descending');
    table.dataset.sortKey=key; table.dataset.sortDir=dir;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th'),function(th){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='descending'?'asc':'desc';
      if(th.dataset.type!=='num'&&!th.getAttribute('aria-sort')){dir='asc';}
      sortBy(th.dataset.key, dir);
      history.replaceState(null,'','#sort='+encodeURIComponent(th.dataset.key)+'&dir='+dir);});});
  var m=/sort=([^&]+)(?:&dir=(asc|desc))?/.exec(location.hash.slice(1)||location.search.slice(1));
  if(m){sortBy(decodeURIComponent(m[1]), m[2]||'desc');}
})();
"""


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


#: nothing may load or run but the page's own style and sort script (pinned by their hashes): markup that reached
#: the page anyway (an inline handler, a <script>, an <img> fetching elsewhere) is inert
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {csp_hash(JS)}; style-src {csp_hash(CSS)}; "
    "img-src 'none'; base-uri 'none'; form-action 'none'"
)

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="generator" content="mmrobust-bench">
<meta name="made-by" content="{{ command }}">
<title>mmrobust-bench leaderboard — {{ dataset }}</title><style>{{ css }}</style></head>
<body><h1>Leaderboard — {{ dataset }}</h1>
<p class="meta">Accuracy on the test split, mean <span class="sd">± sample std</span> over seeds (hover a cell for the
95% t-interval). One row per defense label and configuration. ε in model-input space (ℓ2); “all” = one joint
ℓ2 ball over every modality. {{ mark }} marks a cell whose rows carry validity flags (hover it; legend below the
table). Click a header to sort; the table scrolls sideways, the entry column stays.</p>
<p class="meta">{% if ranked %}<span class="em">Ranked by {{ rank_title }}</span>: under
<code>{{ strong_config }}</code> at ε = {{ strong_eps }}{% if rank_is_any %}, the attacker picks, per sample, the
worst of every modality alone and all of them jointly{% endif %}
(mean over seeds, best first){% if unranked %}; entries without such rows follow in the paper's method order{% endif
%}.{% else %}<span class="em">Not ranked</span>: these rows hold no <code>autoattack</code> rows (the standard strong
evaluation), so the entries are in the paper's method order; a sweep with <code>autoattack</code> on every modality
and <code>any</code> ranks them.{% endif %}</p>
<p class="links">Figures: {% for f in figures %}{% if not loop.first %} · {% endif %}{{ f.title }} (
{%- for name, href in f.files %}{% if not loop.first %} · {% endif %}<a href="{{ href }}">{{ name }}</a>{% endfor %})
{%- else %}none beside this page{% endfor %}</p>
{% if documents %}<p class="links">Tables and findings: {% for f in documents %}{% if not loop.first %} · {% endif
%}{{ f.title }} ({% for name, href in f.files %}{% if not loop.first %} · {% endif %}<a href="{{ href }}">{{ name
}}</a>{% endfor %}){% endfor %}</p>{% endif %}
<p class="links">Model cards: one JSON per model (configuration, checkpoint sha256, every number, environment),
linked from each row's last column{% if cards_dir %} (<a href="{{ cards_dir }}">{{ cards_dir }}</a>){% endif %}.</p>
<table id="leaderboard" class="board"><thead><tr>
{%- for h in head %}<th data-key="{{ h.key }}" data-type="{{ h.type }}"{% if h.cls %} class="{{ h.cls }}"{% endif %}
{%- if h.title %} title="{{ h.title }}"{% endif %}{% if h.sorted %} aria-sort="{{ h.sorted }}"{% endif %}>{{ h.label }}
{%- if h.sub %}<span class="sub">{{ h.sub }}</span>{% endif %}</th>{% endfor -%}
</tr></thead>
<tbody>
{% for row in rows -%}
<tr><td class="text" data-value="{{ row.name }}">{{ row.name }}
{%- if row.name != row.entry %} <code class="id">{{ row.entry }}</code>{% endif %}</td>
{%- for c in row.cells %}<td data-value="{{ c.value }}"{% if c.title %} title="{{ c.title }}"{% endif %}
{%- if c.flags %} class="flagged" data-flags="{{ c.flags }}"{% endif %}>{{ c.shown }}
{%- if c.std %} <span class="sd">± {{ c.std }}</span>{% endif %}
{%- if c.flags %} <span class="flag" title="{{ c.flag_title }}" aria-label="{{ c.flag_title }}">{{ mark }}</span>
{%- endif %}{% if c.note %} <span class="kind" title="{{ c.note_title }}">{{ c.note }}</span>{% endif %}</td>
{%- endfor -%}
<td class="text" data-value="{{ row.config }}" title="{{ row.config }}"><code>{{ row.config_shown }}</code></td>
{#- #}<td class="text" data-value="{{ row.entry }}">{% for link in row.cards %}{% if not loop.first %} · {% endif -%}
<a href="{{ link.href }}">seed {{ link.seed }}</a>{% else %}—{% endfor %}</td></tr>
{% endfor -%}
</tbody></table>
{% if certified %}<p class="meta">Certified accuracy at radius {{ cert_radius }} (mean over seeds,
on the test samples each model was certified on: the first of the split, how many in the findings and
certified.csv):
<span class="em">{{ sound }}</span> columns are randomized smoothing, each sample certified with probability
≥ 1 − α (one column per noise setting σ, n, α; “—” beyond its largest certifiable radius);
<span class="em">{{ empirical }}</span> columns are Eq. 10 (CRMT heads) / Eq. 7 on a modality, Eq. 10 / Eq. 5
jointly, from Lipschitz estimates: they can
overclaim, see the honesty checks in the findings.</p>{% endif %}
{% if ranked %}<h2>Masking check: the paper's ℓ2-PGD against the strong evaluation</h2>
<p class="meta">{{ masking_summary }}</p>
{% if masking %}<table id="masking" class="board"><thead><tr><th class="text">entry</th><th class="text">modality</th>
<th>ε</th><th>pgd_l2</th><th>autoattack</th><th>gap</th><th>seeds</th></tr></thead>
<tbody>
{% for m in masking -%}
<tr><td class="text">{{ m.name }}{% if m.name != m.entry %} <code class="id">{{ m.entry }}</code>{% endif %}</td>
{#- #}<td class="text">{{ m.modality }}</td><td>{{ m.eps }}</td>
{%- for c in (m.pgd, m.strong) %}<td{% if c.flags %} class="flagged" data-flags="{{ c.flags }}" title="{{ c.flags }}"
{%- endif %}>{{ c.shown }}{% if c.flags %} {{ mark }}{% endif %}</td>{% endfor %}
{#- #}<td>{{ m.gap }}</td><td>{{ m.seeds }}</td></tr>
{% endfor -%}
</tbody></table>{% endif %}{% endif %}
{% if versus %}<h2>Against {{ reference }} under the strong evaluation</h2>
<p class="meta">Each entry's accuracy minus {{ reference }}'s (mean over seeds; the strong evaluation's columns at
ε = {{ strong_eps }}, clean on the whole test split) ± the half-width of the difference's 95% interval (Welch's t
over seeds, never narrower than the binomial noise of the two means): ▲ a gain beyond it, ▼ a loss beyond it, no
mark: within noise; {{ mark }}: a flag on either cell (hover it).</p>
<table id="versus" class="board"><thead><tr><th class="text">entry</th>{% for t in versus_titles %}<th>{{ t }}</th>
{%- endfor %}<th>seeds</th></tr></thead>
<tbody>
{% for r in versus -%}
<tr><td class="text">{{ r.name }}{% if r.name != r.entry %} <code class="id">{{ r.entry }}</code>{% endif %}</td>
{%- for c in r.cells %}<td{% if c.flags %} title="{{ c.flags }}"{% endif %}>{{ c.text }}{% if c.flags %} {{ mark }}
{%- endif %}</td>{% endfor %}<td>{{ r.seeds }}</td></tr>
{% endfor -%}
</tbody></table>{% endif %}
<h2>Validity flags</h2>
<p class="meta">{{ mark }} on a cell: some of its rows carry these flags (bench/flags.py), signs that the attack may
have overestimated robustness; a claim resting on a flagged cell needs a stronger evaluation. {% if not flags_seen -%}
No cell of this page is flagged.{% endif %}</p>
<dl class="legend">{% for name, text in legend %}<dt>{{ mark }} {{ name }}</dt><dd>{{ text }}</dd>{% endfor %}</dl>
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
<p class="meta">made by: <code>{{ command }}</code></p>
<script>{{ js }}</script>
</body></html>
"""

TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(PAGE)


__all__ = ["CONTENT_SECURITY_POLICY", "CSS", "JS", "PAGE", "TEMPLATE", "csp_hash"]
