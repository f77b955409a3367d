"""Run-level text as TensorBoard's text plugin renders it (its own renderer)."""

import re

from tensorboard import plugin_util

from tff_dp.program import tensorboard_text

_STATEMENT = """Privacy statement
=================
Central guarantee (against anyone who sees the released models)
Mechanism: clip each update to norm 1, add N(0, (z * clip)^2) noise; the sum is divided by clients_per_round = 10.
Epsilon (RDP accountant, dp-accounting): 9.932.
Released per round: eval/accuracy, privacy/epsilon_rdp.
--seed (public) only seeds the model's initialization.

AUDIT RUN: 12 canary clients joined the population and were sampled
like the real clients (each inserted with probability 1/2; an inserted
canary sends a secret direction far past the clip). The epsilon above
is that of this run, canaries included.
"""


def _html(markdown):
  return plugin_util.markdown_to_safe_html(markdown)


def _paragraphs(html):
  return [
      re.sub(r'\s+', ' ', p)
      for p in re.findall(r'<p>(.*?)</p>', html, flags=re.S)
  ]


def test_prose_is_wrapped_paragraphs_not_a_code_block():
  markdown = tensorboard_text.prose(_STATEMENT)
  assert not [
      line for line in markdown.splitlines() if line.startswith((' ', '\t'))
  ]
  assert '```' not in markdown
  html = _html(markdown)
  assert '<pre>' not in html and '<code>' not in html
  assert '<h1>Privacy statement</h1>' in html
  assert _paragraphs(html) == [
      'Central guarantee (against anyone who sees the released models)',
      'Mechanism: clip each update to norm 1, add N(0, (z * clip)^2) noise; '
      'the sum is divided by clients_per_round = 10.',
      'Epsilon (RDP accountant, dp-accounting): 9.932.',
      'Released per round: eval/accuracy, privacy/epsilon_rdp.',
      "--seed (public) only seeds the model's initialization.",
      # The lines the statement wraps itself: one paragraph again.
      'AUDIT RUN: 12 canary clients joined the population and were sampled '
      'like the real clients (each inserted with probability 1/2; an '
      'inserted canary sends a secret direction far past the clip). The '
      'epsilon above is that of this run, canaries included.',
  ]


def test_prose_reads_as_the_text_says_whatever_markdown_would_make_of_it():
  tricky = [
      'a * b * c and 2 * clip / epsilon_local * 2.',
      '_private_ and `code` and [a link](http://example.com).',
      '<b>not bold</b> & <script>x</script> a < b.',
      '# not a heading.',
      '- not a list.',
      '1. not a numbered list.',
      '> not a quote.',
      '| not | a table |.',
  ]
  html = _html(tensorboard_text.prose('\n'.join(tricky)))
  assert not re.search(
      r'<(em|strong|code|a|b|script|h\d|ul|ol|li|'
      r'blockquote|table)\b', html), html
  rendered = [
      p.replace('&lt;', '<').replace('&gt;', '>').replace('&amp;', '&')
      for p in _paragraphs(html)
  ]
  assert rendered == tricky


def test_verbatim_is_a_code_block_line_by_line():
  flags = '--dataset=digits\n--noise_multiplier=0.5\n--nodp_example\n'
  html = _html(tensorboard_text.verbatim(flags))
  assert '<pre><code>' in html
  assert flags.strip() in html
