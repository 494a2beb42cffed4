"""Stage 8: RA-MIQA and baseline quality models; training, evaluation and scoring."""
