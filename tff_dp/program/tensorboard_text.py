"""Run-level text as TensorBoard's text plugin shows it: prose or verbatim.

The text plugin renders every text summary as Markdown. Prose (the privacy
statement) is written as paragraphs that the browser wraps to the width of the
card: one paragraph per sentence-ending line (`.`, `:` or `)` at its end, or a
blank line after it), so that the lines the statement itself wraps (an audit
run's notes) join into one paragraph again; a line underlined with `=` is a
heading; every character Markdown would read as markup is escaped, so the
text reads exactly as privacy_statement.txt does. Verbatim text (the flags, one
per line) is an indented code block. Pure Python.
"""

import re

# What Python-Markdown (the text plugin's renderer) reads as markup anywhere
# in a line and can escape with a backslash: emphasis, code, links. `<` (raw
# HTML) and `&` (entities) become entities.
_INLINE = re.compile(r'([\\`*_\[\]])')
# What it reads as markup at the start of a block: headings, quotes, lists,
# rules, tables.
_BLOCK_START = re.compile(r'^([#>+\-=|]|\d+\.)')
_SENTENCE_END = ('.', ':', ')')
_UNDERLINE = re.compile(r'^=+$')


def _escape(line: str) -> str:
  line = line.replace('&', '&amp;').replace('<', '&lt;')
  return _INLINE.sub(r'\\\1', line)


def _block(text: str) -> str:
  """A paragraph (or heading text) that starts with no block markup."""
  return _BLOCK_START.sub(lambda m: m.group(1)[:-1] + '\\' + m.group(1)[-1],
                          text)


def verbatim(text: str) -> str:
  """`text` as a Markdown code block: every line as it is, unwrapped."""
  return '\n'.join('    ' + line for line in text.splitlines())


def prose(text: str) -> str:
  """`text` as Markdown paragraphs, the way the module docstring says."""
  lines = [line.strip() for line in text.splitlines()]
  blocks, paragraph = [], []

  def end_paragraph():
    if paragraph:
      blocks.append(_block(' '.join(paragraph)))
      paragraph.clear()

  for i, line in enumerate(lines):
    following = lines[i + 1] if i + 1 < len(lines) else ''
    if _UNDERLINE.match(line):
      continue  # Consumed with the heading above it.
    if not line:
      end_paragraph()
    elif _UNDERLINE.match(following):
      end_paragraph()
      blocks.append('# ' + _block(_escape(line)))
    else:
      paragraph.append(_escape(line))
      if line.endswith(_SENTENCE_END):
        end_paragraph()
  end_paragraph()
  return '\n\n'.join(blocks) + '\n'
