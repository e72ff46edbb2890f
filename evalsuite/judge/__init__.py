"""LLM-judge scoring (gpt-eval): rubrics as data, openai client calls, SQLite cache, statistics.

rubric.py   load/validate rubric files, render prompts, validate replies
client.py   judge calls through `openai` (retries, budget, concurrency), plan/execute a run
cache.py    SQLite cache + log of every judgment (WAL, one commit per result)
scoring.py  tables, bootstrap CIs, test-retest agreement, logprob-weighted grades
validate.py controlled corruptions of real stories + rank agreement
server.py   loopback OpenAI-compatible server with a pluggable backend (embedded judge)
local_model.py  the packaged offline judge (.[judge]): GGUF assembly + xllamacpp backend
"""
