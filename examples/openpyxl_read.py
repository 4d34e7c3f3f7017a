"""Side-by-side figure: openpyxl read-only mode reading the same xlsx.

python3 examples/openpyxl_read.py FILE.xlsx   (pip install openpyxl)
"""
import resource
import sys
import time

import openpyxl

started = time.perf_counter()
book = openpyxl.load_workbook(sys.argv[1], read_only=True, data_only=True)
sheet = book.worksheets[0]
rows = 0
for row in sheet.iter_rows(values_only=True):
    rows += 1
book.close()
secs = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"{sys.argv[1]}: {rows - 1} rows in {secs:.2f} s = {(rows - 1) / secs:.0f} rows/s, peak RSS {peak} MiB")
