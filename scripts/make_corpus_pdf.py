#!/usr/bin/env python3
"""Write the bundled sample PDF of the station handbook.

Standard library only. The PDF uses the base-14 Helvetica fonts with
WinAnsiEncoding, one content stream per page, text drawn with BT/Tf/Td/Tj
operators and a classic cross-reference table, so any PDF reader (and
pypdf's text extraction) can read it back.

Usage: python3 scripts/make_corpus_pdf.py [OUTPUT]
Default output: corpus/station/generator-log.pdf (relative to the repo root).
"""

from __future__ import annotations

import sys
from pathlib import Path

PAGE_W, PAGE_H = 612, 792  # US Letter, points
MARGIN_X, TOP_Y, BOTTOM_Y = 72, 730, 72

# Advance widths (1/1000 em) of the printable ASCII characters 32..126.
HELVETICA = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
]
HELVETICA_BOLD = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
]

# style -> (font resource, size, leading, space before, widths)
STYLES = {
    "title": ("F2", 16, 22, 0, HELVETICA_BOLD),
    "h": ("F2", 12, 17, 8, HELVETICA_BOLD),
    "p": ("F1", 10, 14, 4, HELVETICA),
    "li": ("F1", 10, 14, 2, HELVETICA),
}

TITLE = "Generator Maintenance Log and Procedures"

PAGES = [
    [
        ("title", "Tarnholm Col Research Station"),
        ("title", TITLE),
        ("p", "Document GEN-01, revision 4. Kept in the Generator Shed, with a copy in the "
              "radio room. Entries in the log (section 4) are made by whoever did the work."),
        ("h", "1. The generating sets"),
        ("p", "The station has two identical diesel generating sets, called Genset A and "
              "Genset B. Both are Brannvik D-30 units rated 30 kVA, three-phase, and both "
              "stand in the Generator Shed, set apart downwind of the living quarters. They "
              "support the battery bank during long storms and in the darkest weeks of winter; "
              "on a normal day neither of them runs."),
        ("p", "Only one set runs at a time. The lead set is swapped on the first day of every "
              "month so that running hours stay roughly equal on both machines. The set that "
              "is not leading is kept on standby, with its block heater switched on."),
        ("p", "Heat from the engine coolant is not wasted: a plate heat exchanger passes it to "
              "the heating loop of the Main Hall whenever a set is running."),
        ("h", "2. Fuel"),
        ("p", "The gensets burn arctic-grade diesel only. Summer diesel turns to wax in the "
              "cold and blocks the filters within hours. Fuel comes from the tank farm behind "
              "the shed: four double-walled tanks of 5,000 litres each, filled by the summer "
              "convoy. Dip the tanks every Friday and record the levels in this log."),
        ("h", "3. Shed safety"),
        ("li", "- Wear ear defenders whenever a set is running."),
        ("li", "- Never refuel, open the coolant cap or touch the exhaust of a running set."),
        ("li", "- Keep the shed doors clear of drifts; the sets need their air intake louvres open."),
        ("li", "- Use lockout-tagout before any work on a set (see the maintenance chapter)."),
    ],
    [
        ("title", "Service intervals and procedures"),
        ("p", "Intervals are counted in engine running hours, read from the hour meter on each "
              "control panel. Whichever comes first applies where a calendar interval is also given."),
        ("h", "Engine oil"),
        ("p", "Change the oil and the oil filter every 250 running hours, and at least once a year. "
              "Use 0W-40 synthetic oil only; thicker grades will not crank at our temperatures. "
              "The sump takes 7.2 litres including the filter. Oil filter part code: BV-OF-204."),
        ("h", "Fuel and air filters"),
        ("p", "Replace the fuel filter every 500 running hours with part BV-FF-118, then bleed the "
              "fuel system with the hand primer until the fuel runs free of bubbles. Inspect the air "
              "filter at every oil change and replace it every 1,000 running hours with part BV-AF-520."),
        ("h", "Coolant and valves"),
        ("p", "The coolant is a mix of 55% glycol and water, which protects the engine down to "
              "-48 degrees C. Check it each autumn with the refractometer. Valve clearance is "
              "0.25 mm for both intake and exhaust valves, checked every 2,000 running hours."),
        ("h", "Cold starting and load test"),
        ("p", "Below -10 degrees C, hold the glow plug switch for 12 seconds before cranking. Do not "
              "crank for more than 15 seconds at a time. Once a month, run each set for 40 minutes "
              "at 75% load into the resistive load bank (the grey cabinet by the door) to burn off "
              "carbon and prove the set under load."),
        ("h", "Oil change procedure (step by step)"),
        ("li", "1. Run the set for 10 minutes so the oil is warm and flows freely, then stop it."),
        ("li", "2. Apply lockout-tagout on the control panel and the battery isolator."),
        ("li", "3. Place the drip tray, open the sump drain and let the oil drain completely."),
        ("li", "4. Fit a new filter with a smear of clean oil on its seal (hand-tight only)."),
        ("li", "5. Refill, run for 2 minutes, stop, check the dipstick and look for leaks."),
        ("li", "6. Pour the old oil into the waste oil drum and record the work in section 4."),
    ],
    [
        ("title", "4. Log of recent work"),
        ("p", "Format: date, set, hour meter reading, work done, signature. Newest entries at the bottom."),
        ("li", "03 Feb - Genset A - 6,140 h - monthly load test, normal. Signed R. Haldane."),
        ("li", "17 Feb - Genset B - 4,812 h - oil and oil filter change, oil sample taken. Signed I. Okafor."),
        ("li", "02 Mar - Genset A - 6,163 h - smoky exhaust traced to injector no. 3, injector replaced"),
        ("li", "             with part BV-INJ-07, smoke cleared. Signed T. Brenner."),
        ("li", "21 Mar - Genset B - 4,879 h - coolant weeping at lower hose clamp, clamp replaced,"),
        ("li", "             coolant topped up with 0.6 litres of premix. Signed R. Haldane."),
        ("li", "04 Apr - Genset A - 6,201 h - fuel filter change, system bled. Signed I. Okafor."),
        ("h", "5. Fuel consumption"),
        ("p", "At 75% load a D-30 burns 6.8 litres per hour. At half load it burns a little under "
              "5 litres per hour. Use these figures to check the weekly tank dips: a large "
              "difference means a leak or a meter fault and must be reported the same day."),
        ("h", "6. Major overhaul"),
        ("p", "The next major overhaul (head off, injectors, water pump and belts) is due at "
              "12,000 running hours on either set. Order the overhaul kit (part BV-OVH-30) with "
              "the annual resupply at least one season before a set reaches that figure."),
        ("h", "7. Faults to report at once"),
        ("li", "- White smoke that does not clear after warm-up (possible coolant in the cylinders)."),
        ("li", "- Oil pressure lamp lit while running: stop the set immediately."),
        ("li", "- Any fuel smell inside the shed."),
    ],
]


def text_width(text: str, widths: list[int], size: float) -> float:
    total = 0
    for ch in text:
        code = ord(ch)
        total += widths[code - 32] if 32 <= code <= 126 else 556
    return total * size / 1000.0


def wrap(text: str, widths: list[int], size: float, max_width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = word if not current else current + " " + word
        if current and text_width(candidate, widths, size) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def pdf_string(text: str) -> bytes:
    """Encode text as a PDF literal string in WinAnsi (cp1252), escaping specials."""
    raw = text.encode("cp1252")
    out = bytearray(b"(")
    for b in raw:
        if b in (0x28, 0x29, 0x5C):  # ( ) backslash
            out += b"\\" + bytes([b])
        elif b < 32 or b > 126:
            out += b"\\%03o" % b
        else:
            out.append(b)
    out += b")"
    return bytes(out)


def page_stream(blocks, page_no: int, page_count: int) -> bytes:
    ops: list[bytes] = []
    y = TOP_Y
    max_width = PAGE_W - 2 * MARGIN_X
    for style, text in blocks:
        font, size, leading, before, widths = STYLES[style]
        y -= before
        # keep the leading spaces of indented list continuation lines
        indent = len(text) - len(text.lstrip(" "))
        x = MARGIN_X + text_width(" " * indent, widths, size)
        for line in wrap(text.strip(), widths, size, max_width - (x - MARGIN_X)):
            if y < BOTTOM_Y:
                raise SystemExit(f"page {page_no} overflows; shorten its text")
            ops.append(b"BT /%s %d Tf %.2f %.2f Td %s Tj ET" % (
                font.encode(), size, x, y, pdf_string(line)))
            y -= leading
    footer = f"GEN-01 rev. 4 - page {page_no} of {page_count}"
    ops.append(b"BT /F1 8 Tf %d %d Td %s Tj ET" % (MARGIN_X, 40, pdf_string(footer)))
    return b"\n".join(ops) + b"\n"


def build_pdf(pages) -> bytes:
    objects: list[bytes] = []  # objects[i] is object number i + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    f1 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    f2 = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    info = add(b"<< /Title %s /Author %s /Producer %s >>" % (
        pdf_string(TITLE), pdf_string("Tarnholm Col Research Station"),
        pdf_string("make_corpus_pdf.py")))

    kids = []
    for i, blocks in enumerate(pages, start=1):
        stream = page_stream(blocks, i, len(pages))
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        page = add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] "
            b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
            % (pages_obj, PAGE_W, PAGE_H, f1, f2, content))
        kids.append(page)

    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids), len(kids))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (
        len(objects) + 1, catalog, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "corpus" / "station" / "generator-log.pdf"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(build_pdf(PAGES))
    print(f"wrote {target} ({len(PAGES)} pages)")


if __name__ == "__main__":
    main()
