"""JSON (de)serialization of dp-accounting events, without pickle.

Events are attrs classes; they are written as `{"name": <class name>, <field>:
<value>, ...}`, recursively. Only classes defined in `dp_accounting.dp_event`
can be named, so a ledger file can never make us construct arbitrary objects.
"""

import json
import math
import numbers

import attr
from dp_accounting import dp_event


class LedgerFormatError(ValueError):
  """A serialized ledger or event is malformed."""


# Every event class defined by dp_accounting itself, and nothing else: new
# mechanisms added there (or already there: Laplace, tree aggregation, ...)
# serialize without changes here, while JSON can never name arbitrary code.
EVENT_CLASSES = {
    cls.__name__: cls
    for cls in vars(dp_event).values()
    if isinstance(cls, type) and issubclass(cls, dp_event.DpEvent) and
    cls is not dp_event.DpEvent and cls.__module__ == dp_event.__name__
}


def event_to_json(event: dp_event.DpEvent) -> dict:
  """`{"name": <class name>, <field>: <value>, ...}`, recursively."""
  cls = type(event)
  if EVENT_CLASSES.get(cls.__name__) is not cls:
    raise TypeError(f'Cannot serialize {cls!r}: not a dp_accounting event '
                    f'class (known: {sorted(EVENT_CLASSES)}).')
  out = {'name': cls.__name__}
  for field in attr.fields(cls):
    out[field.name] = _value_to_json(getattr(event, field.name))
  return out


def event_key(event: dp_event.DpEvent) -> str:
  """`event` as canonical JSON: equal for equal events, a dict or cache key."""
  return json.dumps(event_to_json(event), sort_keys=True, allow_nan=False)


def _value_to_json(value):
  if isinstance(value, dp_event.DpEvent):
    return event_to_json(value)
  if isinstance(value, (list, tuple)):
    return [_value_to_json(v) for v in value]
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f'Cannot serialize event field value {value!r}.')
  if isinstance(value, numbers.Integral):
    return int(value)
  if not math.isfinite(value):
    raise ValueError(f'Event field values must be finite, got {value}.')
  return float(value)


def event_from_json(obj, *, where: str = 'event') -> dp_event.DpEvent:
  """Inverse of `event_to_json`; raises `LedgerFormatError` naming `where`."""
  if not isinstance(obj, dict) or not isinstance(obj.get('name'), str):
    raise LedgerFormatError(f'{where}: expected an object with a string '
                            f'"name", got {obj!r}.')
  cls = EVENT_CLASSES.get(obj['name'])
  if cls is None:
    raise LedgerFormatError(f'{where}: unknown event name {obj["name"]!r} '
                            f'(known: {sorted(EVENT_CLASSES)}).')
  fields = {f.name: f for f in attr.fields(cls)}
  unknown = set(obj) - set(fields) - {'name'}
  if unknown:
    raise LedgerFormatError(f'{where}: unknown fields {sorted(unknown)} for '
                            f'{cls.__name__}.')
  kwargs = {}
  for name, field in fields.items():
    if name in obj:
      kwargs[name] = _value_from_json(obj[name], where=f'{where}.{name}')
    elif field.default is attr.NOTHING:
      raise LedgerFormatError(f'{where}: missing field {name!r} for '
                              f'{cls.__name__}.')
  return cls(**kwargs)


def _value_from_json(value, *, where):
  if isinstance(value, dict):
    return event_from_json(value, where=where)
  if isinstance(value, list):
    return [
        _value_from_json(v, where=f'{where}[{i}]') for i, v in enumerate(value)
    ]
  if isinstance(value, bool) or not isinstance(
      value,
      (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
    raise LedgerFormatError(f'{where}: invalid value {value!r}.')
  return value
