#!/usr/bin/env python3
"""Writes a ~N-byte KlientPlus (client-major nested JSON) or Fallmonitor (JSON Lines) export for
the 1 GB streaming bound of BENCHMARKS.md. Every record is valid.

usage: gen_nested.py klientplus-json|fallmonitor-jsonl BYTES OUT [--after]
  --after: (klientplus-json) each client's own members come after its list of cases.
"""
import sys

fmt, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
after = "--after" in sys.argv
names = ["Yılmaz, Ayşe Nur", "Müller-Lüdenscheidt, Hans Peter", "Nowak, Ewa", "Nguyen, Thi Mai",
         "Öztürk, Zeynep", "Schmidt, Jonas", "Kowalska, Zofia", "Brandt, Emil"]
streets = ["Bonner Straße 12a", "Hauptstr. 5-7", "Am Ring 12 b", "Straße des 17. Juni 100"]
areas = ["SGB II", "SGB III", "SGB VIII", "Suchthilfe", "Frühe Hilfen"]
kinds = ["Beratung", "Vermittlung", "Schuldnerberatung", "Suchtberatung"]
w = open(out, "w", encoding="utf-8", buffering=1 << 20)
records = 0
if fmt == "klientplus-json":
    w.write('{"export": {"id": "3f6c2a9e-5b1d-4e7a-9c2f-8a1b2c3d4e5f", "erstellt": "2026-11-02T08:15:00+01:00", '
            '"monat": "10/2026", "art": "Teillieferung", "test": "Nein"},\n"klienten": [\n')
    i = 0
    while w.tell() < size:
        n = 1 + i % 3
        own = (f'"klientNr": "K-{i}", "name": "{names[i % 8]}", "geburtsdatum": "{1 + i % 28:02}.{1 + i % 12:02}.{1950 + i % 50}", '
               f'"geschlecht": "{"weiblich" if i % 2 else "männlich"}", "staatsangehoerigkeit": "DEU", '
               f'"strasseHausnr": "{streets[i % 4]}", "plzOrt": "{50000 + i % 9999:05} Köln", "telefon": ["0221 {i}"]')
        cases = []
        for j in range(n):
            services = ", ".join(
                f'{{"art": "{kinds[(i + j + k) % 4]}", "von": "0{1 + k}.02.2026", "stunden": "{k + 1},5"}}'
                for k in range(1 + (i + j) % 2))
            cases.append(
                f'{{"aktenzeichen": "KP-{i}-{j}", "bereich": "{areas[(i + j) % 5]}", "beginn": "03.02.2026 09:30", '
                f'"team": "Team {i % 17}", "leistungen": [{services}], '
                f'"einwilligung": {{"nr": "EW-{i}-{j}", "zweck": "Statistik", "empfaenger": "*", '
                f'"gruppen": "client.identity, case", "datum": "03.02.2026"}}}}')
            records += 1
        faelle = '"faelle": [' + ", ".join(cases) + "]"
        body = f"{faelle}, {own}" if after else f"{own}, {faelle}"
        w.write(("" if i == 0 else ",\n") + "{" + body + "}")
        i += 1
    w.write("\n]}\n")
elif fmt == "fallmonitor-jsonl":
    w.write('{"format": "fallmonitor/2", "lieferung": "0e1d2c3b-4a59-4687-9a6b-5c4d3e2f1a0b", "modus": "teil", "monat": "10.2026"}\n')
    i = 0
    while w.tell() < size:
        vn = ", ".join(f'"{v}"' for v in names[i % 8].split(", ")[1].split(" "))
        w.write(f'{{"fall": "FM-{i}", "programm": "{"JC" if i % 2 else "JH"}", "seit": "01.02.2026", '
                f'"person": {{"id": "P-{i}", "nachname": "{names[i % 8].split(",")[0]}", "vornamen": [{vn}], '
                f'"geburt": "{1 + i % 28:02}.{1 + i % 12:02}.{1950 + i % 50}", "geschlecht": "{"MW"[i % 2]}"}}, '
                f'"massnahmen": [{{"typ": "B", "ab": "01.02.2026", "h": {i % 20}}}, {{"typ": "V", "ab": "01.03.2026", "h": 2}}]}}\n')
        i += 1
        records += 1
else:
    sys.exit("unknown format")
w.close()
print(f"{out}: {records} records")
