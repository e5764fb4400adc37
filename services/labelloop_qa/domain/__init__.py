"""Pure QA logic: agreement, consensus, annotator quality, flagging. No I/O, no messaging."""
