# A dead driver's jobs that finished without it (arctax.orphans), included after common.smk:
# Snakemake reads its incomplete markers after parsing, so here the jobs a driver killed
# outright started and that finished after it died are adopted (their markers removed, their
# outputs kept), one line each, on proof: the job's done marker is newer than its submission
# and every output is there. Nothing is adopted while a live driver holds the lock.
import sys

from arctax.orphans import adopt_finished

if workflow.is_main_process:
    for _line in adopt_finished(S, OUT):
        print(_line, file=sys.stderr)
