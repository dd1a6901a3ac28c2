"""The report's library: choosing examples from pair dumps (`examples`) and the
self-contained HTML page (`html`). `lgip_report.py --html` is its command line."""
