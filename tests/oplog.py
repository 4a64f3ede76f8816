"""A generated operations log: a water treatment plant's shift log, one entry a line, with no
headings, routine entries (readings, rounds, rotations, deliveries, acknowledgements, planned
work) and a few incidents, each with the follow-up entries a real incident gets.

Routine entries share the incidents' vocabulary on purpose (pump P-3 is rotated every day, the
generator is test-run every week, the chlorine analyser is calibrated, samples are taken), so
a summary finds an incident by what happens around it, not by a word no routine entry uses.
bench/data/summarize/plant-log.txt is ``make_log()``; key-events.json there lists its incidents.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPERATORS = ("K.Berg", "M.Osei", "T.Lindqvist", "R.Patel", "J.Nowak", "A.Ferreira")
CONTROL = ("Control", "Duty manager", "Lab")


@dataclass(frozen=True)
class Incident:
    day: int
    name: str
    match: str  # a case-insensitive regular expression a point mentioning the incident matches
    entries: tuple[tuple[int, str, str], ...]  # (minutes after the first, who, what)


INCIDENTS: tuple[Incident, ...] = (
    Incident(1, "pump P-3 trips on high vibration", r"P-3 tripped|tripped on high vibration", (
        (0, "op", "Pump P-3 tripped on high vibration alarm (11.2 mm/s). Started standby pump P-4 manually."),
        (2, "Control", "Why did P-4 not start on auto?"),
        (5, "op", "Auto changeover was inhibited since the valve work on Monday. Re-enabled it now."),
        (9, "Duty manager", "Keep P-3 locked out until the fitters have looked at it."),
        (14, "op", "P-3 isolated and locked out, tag 0417. Outlet pressure back to 4.1 bar on P-4."),
        (95, "op", "Fitter found the drive end bearing of P-3 running hot and rough. Bearing to be replaced."),
    )),
    Incident(3, "chlorine analyser CL-2 fails, dosing on manual", r"CL-2 (has )?failed|manual dosing|dosing (switched )?to manual", (
        (0, "op", "Chlorine analyser CL-2 has failed: reading stuck at 0.00 mg/l, dosing pumps ramped to maximum."),
        (1, "op", "Switched chlorine dosing to manual at 1.8 l/h."),
        (4, "Lab", "Grab sample at the outlet: free chlorine 1.34 mg/l. High but within the limit."),
        (6, "Control", "Are the other analysers reading sensibly?"),
        (8, "op", "CL-1 and CL-3 agree with the grab sample. CL-2 sample line was blocked with sediment."),
        (50, "op", "CL-2 sample line flushed and analyser back in service. Dosing returned to automatic."),
    )),
    Incident(5, "grid supply lost for 42 minutes", r"grid supply (was )?lost|mains (power )?(lost|failed)|power cut", (
        (0, "op", "Grid supply lost at the main intake. Generator G1 started and took the load after 40 seconds."),
        (1, "op", "High lift pumps P-1 and P-4 restarted on generator. UV reactors tripped, restarting."),
        (3, "Control", "Network operator reports a fault on the 11 kV feeder, no time given for restoration."),
        (12, "op", "UV reactors back in service. Treated water sent to waste for 11 minutes during the restart."),
        (42, "op", "Grid supply restored. Load transferred back to grid, G1 running down."),
        (60, "Duty manager", "Fuel used by G1: about 160 litres. Order a top-up for the day tank."),
    )),
    Incident(7, "turbidity spike on filter bed 6, bed taken offline", r"4\.8 NTU|bed 6 (taken )?offline|turbidity (spike|rose)", (
        (0, "op", "Turbidity after filter bed 6 rose to 4.8 NTU within five minutes. Bed 6 taken offline."),
        (3, "Control", "Is the combined filtered water still in spec?"),
        (4, "op", "Combined filtered turbidity 0.19 NTU, within spec. Other beds normal."),
        (30, "op", "Bed 6 backwashed twice. Found a cracked underdrain nozzle plate near the inlet."),
        (34, "Duty manager", "Bed 6 stays out of service until the underdrain is repaired. Reported to the regulator."),
    )),
    Incident(8, "contractor injures a hand at the sludge press", r"injur|first aid", (
        (0, "op", "Contractor from Delta Mech injured his left hand on the sludge press belt guard."),
        (2, "op", "First aid given by J.Nowak. Cut cleaned and dressed; ambulance not needed."),
        (5, "Duty manager", "Press stopped and guard to be checked before restart. Accident report AR-26-014 opened."),
        (40, "op", "Belt guard refitted with the missing fixing bolt. Press restarted."),
    )),
    Incident(10, "telemetry link to the north reservoir lost for three hours", r"(link|telemetry|SCADA).{0,40}(lost|down)|no data from the north reservoir", (
        (0, "op", "SCADA telemetry link to the north reservoir lost. No level data from R3 since 02:10."),
        (6, "Control", "Can someone drive up and read the level locally?"),
        (40, "op", "R3 level read locally: 3.62 m. Filling by hand control from the plant side."),
        (120, "op", "Radio modem at R3 replaced. Telemetry link restored after three hours."),
    )),
    Incident(11, "leak on the trunk main at Mill Road", r"leak|Mill Road", (
        (0, "Control", "Public report of water running along Mill Road near the school."),
        (8, "op", "Burst confirmed on the 600 mm trunk main at Mill Road. Valves V-21 and V-22 closed."),
        (10, "op", "Outlet flow dropped by 210 m3/h. North zone now fed from reservoir R3 only."),
        (15, "Duty manager", "Repair crew called out. Customers in the north zone to be warned of low pressure."),
        (300, "op", "Mill Road repair finished with a 600 mm clamp. Valves reopened and main flushed."),
    )),
    Incident(13, "coliform found in a sample: boil-water notice", r"coliform|boil.water", (
        (0, "Lab", "Routine sample from the Hollow Lane zone is positive for total coliforms (3 per 100 ml)."),
        (5, "Duty manager", "Is the chlorine residual in that zone normal?"),
        (9, "Lab", "Residual at Hollow Lane only 0.08 mg/l, well below the usual 0.4 mg/l."),
        (20, "Duty manager", "Boil-water notice issued for the Hollow Lane zone on advice of the health authority."),
        (35, "op", "Zone flushed at hydrants H-88 and H-91. Resamples taken at six points."),
    )),
)


def _routine(rng: random.Random, hour: int) -> tuple[str, str]:
    """(who, what): one routine entry; ``who`` "op" means the operator on shift."""
    kind = rng.randrange(17)
    r = rng.uniform
    if kind == 0:
        return "op", f"Reservoir levels: R1 {r(3.8, 4.6):.2f} m, R2 {r(3.5, 4.3):.2f} m, R3 {r(3.2, 4.0):.2f} m."
    if kind == 1:
        return "Lab", (f"Outlet sample: turbidity {r(0.08, 0.2):.2f} NTU, free chlorine {r(0.45, 0.6):.2f} mg/l, "
                       f"pH {r(7.2, 7.6):.1f}.")
    if kind == 2:
        bed = rng.randrange(1, 9)
        return "op", f"Filter bed {bed} backwashed, {rng.randrange(9, 14)} min, headloss back to {r(0.3, 0.6):.1f} m."
    if kind == 3:
        return "op", "Walkround done, nothing to report."
    if kind == 4:
        duty, standby = rng.sample(("P-1", "P-2", "P-3", "P-4"), 2)
        return "op", f"Pump rotation: {duty} on duty, {standby} on standby."
    if kind == 5:
        return "Control", rng.choice(("Noted.", "Thanks.", "Copy.", "OK, thanks.", "Received.", "Ack."))
    if kind == 6:
        return "op", f"Inlet flow {rng.randrange(1650, 1900)} m3/h, outlet {rng.randrange(1600, 1850)} m3/h."
    if kind == 7:
        return "op", f"Chlorine analyser CL-{rng.randrange(1, 4)} calibrated against grab sample, offset {r(0, 0.03):.2f} mg/l."
    if kind == 8:
        return "op", (f"Chemical stock: ferric sulphate tank T2 at {rng.randrange(40, 95)}%, "
                      f"hypochlorite tank T5 at {rng.randrange(40, 95)}%.")
    if kind == 9:
        return "op", f"Sludge press running, cake {r(20, 26):.0f}% dry solids."
    if kind == 10:
        return "op", f"UV reactors 1 and 2 in service, dose {rng.randrange(38, 46)} mJ/cm2."
    if kind == 11:
        return "Control", rng.choice(("Any change at the intake?", "How are the filters looking?",
                                      "What is the outlet pressure now?", "Is the press running?"))
    if kind == 12:
        return "op", f"Outlet pressure {r(3.9, 4.3):.1f} bar, all normal."
    if kind == 13:
        return "op", rng.choice(("Intake screens cleaned.", "Coagulant dose trimmed after raw water change.",
                                 "Lighting fault in the pump hall reported to maintenance.",
                                 "Raw water colour up slightly after rain.", "Gate at the north entrance locked."))
    if kind == 14:
        return "Lab", f"Raw water: turbidity {r(2, 9):.1f} NTU, colour {rng.randrange(12, 40)} Hazen."
    if kind == 15:
        return "op", f"Hydrant flushing in the {rng.choice(('north', 'south', 'east', 'Hollow Lane'))} zone as planned."
    return "op", rng.choice(("Roger.", "Will do.", "Done.", "OK.", "Checked, fine."))


def make_log(*, days: int = 14, entries_per_day: int = 160, seed: int = 21,
             incidents: tuple[Incident, ...] = INCIDENTS) -> tuple[str, dict[str, int]]:
    """The log's text and, per incident name, the line (1-based) where it starts."""
    rng = random.Random(seed)
    lines = ["Riverside Water Treatment Works: operations log", ""]
    starts: dict[str, int] = {}
    for day in range(days):
        date = f"2026-03-{day + 2:02d}"
        shift = [rng.choice(OPERATORS), rng.choice(OPERATORS)]
        entries: list[tuple[int, str, str]] = []
        for minute in sorted(rng.sample(range(24 * 60), entries_per_day)):
            entries.append((minute, *_routine(rng, minute // 60)))
        for handover in (6 * 60, 18 * 60):
            entries.append((handover, "op", f"Shift handover to {rng.choice(OPERATORS)}. All pumps normal, "
                                             f"{rng.randrange(7, 9)} of 8 filter beds in service."))
        if day % 7 == 3:
            entries.append((10 * 60, "op", f"Generator G1 weekly test run, {rng.randrange(15, 25)} min on load, OK."))
        if day % 5 == 2:
            entries += [(13 * 60 + k * 7, "op", f"Planned backwash sequence, bed {k + 1} of 8 done.") for k in range(8)]
        due = [i for i in incidents if i.day == day]
        for incident in due:
            at = rng.randrange(2 * 60, 18 * 60)
            for offset, who, what in incident.entries:
                entries.append((at + offset, who, what, incident.name))  # type: ignore[arg-type]
        entries.sort(key=lambda e: e[0])
        for entry in entries:
            minute, who, what = entry[:3]
            name = shift[0] if minute < 18 * 60 else shift[1]
            if len(entry) == 4 and entry[3] not in starts:
                starts[entry[3]] = len(lines) + 1
            lines.append(f"{date} {minute // 60:02d}:{minute % 60:02d} {name if who == 'op' else who}: {what}")
    return "\n".join(lines) + "\n", starts
