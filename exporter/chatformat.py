"""Render the model's chat template once, at export, into per-role framing text (runtimes.chat.ChatFormat), and
check the framing against the real template on the message shapes the ops send. A template that cannot be framed
this way (its output depends on the content beyond placing it, e.g. it trims or escapes it) is refused with one line.
"""

from __future__ import annotations

from typing import Any, Sequence

from runtimes.chat import PLAIN, ChatFormat

from .errors import UnsupportedError

# Sentinels that no template produces by itself and no tokenizer special-cases.
_S, _U, _A, _U2 = "\x1eMEMLORA_SYSTEM\x1e", "\x1eMEMLORA_USER\x1e", "\x1eMEMLORA_ASSISTANT\x1e", "\x1eMEMLORA_USER2\x1e"


def _render(tok: Any, messages: Sequence[dict[str, str]], generation: bool = True) -> str:
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation)


def _split(text: str, *marks: str) -> list[str]:
    out = []
    for m in marks:
        if text.count(m) != 1:
            raise UnsupportedError("the chat template does not place each message's content verbatim exactly once; "
                                   "it cannot be carried as per-role framing")
        head, text = text.split(m)
        out.append(head)
    return out + [text]


def derive(tok: Any) -> ChatFormat:
    """The framing of `tok.chat_template` (PLAIN for a tokenizer without one)."""
    if not getattr(tok, "chat_template", None):
        return PLAIN
    sys_user = [{"role": "system", "content": _S}, {"role": "user", "content": _U}]
    try:
        full = _render(tok, sys_user)
        closed = _render(tok, sys_user, generation=False)
        user_only = _render(tok, [{"role": "user", "content": _U}])
        turns = _render(tok, [*sys_user, {"role": "assistant", "content": _A}, {"role": "user", "content": _U2}])
    except Exception as e:  # a template that refuses these shapes
        raise UnsupportedError(f"the chat template cannot be rendered for [system, user]: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}") from None
    sys_before, gap, tail = _split(full, _S, _U)
    user_after = closed.split(_U, 1)[1] if closed.count(_U) == 1 else ""
    if not tail.startswith(user_after):
        raise UnsupportedError("the chat template's generation prompt does not follow the closed conversation")
    generation_prompt = tail[len(user_after):]
    # The text between two messages is the first's closing text (the user's, when the template closes every message
    # alike) and the next one's opening text.
    sys_after = user_after if gap.startswith(user_after) else ""
    user_before = gap[len(sys_after):]
    _, _, a_gap, _ = _split(turns, _S, _U, _A)
    a_before = a_gap[len(user_after):] if a_gap.startswith(user_after) else a_gap
    a_after_gap = turns.split(_A, 1)[1].split(_U2, 1)[0]
    a_after = a_after_gap[: len(a_after_gap) - len(user_before)] if a_after_gap.endswith(user_before) else ""
    roles = {"system": (sys_before, sys_after), "user": (user_before, user_after), "assistant": (a_before, a_after)}
    # A template that inserts a system message of its own when none is given (SmolLM2: "You are a helpful AI
    # assistant named SmolLM, ..."): that text is the default system.
    default_system = None
    u_head, _ = _split(user_only, _U)
    if u_head != user_before:
        if u_head.startswith(sys_before) and u_head.endswith(sys_after + user_before):
            default_system = u_head[len(sys_before): len(u_head) - len(sys_after + user_before)]
        elif not u_head.endswith(user_before):
            raise UnsupportedError("the chat template frames a lone user message differently from one after a "
                                   "system message; it cannot be carried as per-role framing")
    return ChatFormat(roles=roles, generation_prompt=generation_prompt, default_system=default_system,
                      add_special_tokens=False)


def check(fmt: ChatFormat, tok: Any, conversations: Sequence[Sequence[dict[str, str]]]) -> None:
    """Refuse (UnsupportedError) a framing that renders any of `conversations` differently from the template."""
    if fmt is PLAIN:
        return
    for msgs in conversations:
        want = _render(tok, msgs)
        got = fmt.render(msgs)
        if got != want:
            i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise UnsupportedError(f"the chat template cannot be carried as per-role framing: for a "
                                   f"{[m['role'] for m in msgs]} prompt it differs at character {i} "
                                   f"({want[max(0, i - 20): i + 20]!r} vs {got[max(0, i - 20): i + 20]!r})")
