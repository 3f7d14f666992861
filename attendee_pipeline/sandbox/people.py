"""Made-up people shared by the sandboxes' generated records.

What belongs here: the name, company and job-title pools a sandbox draws its attendees from, and
the integer hash (splitmix64) that picks from them, so that records are computed from a seed and
an index alone and two sandboxes' people look alike. Nothing here is real personal data; what
each provider's records look like lives in that integration's sandbox.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Anouk", "Bram", "Carmen", "Chen", "Daan", "Dara", "Elif", "Emma",
    "Farid", "Femke", "Grace", "Hana", "Ines", "Ivan", "Jonas", "Julia", "Kofi", "Lars", "Lea",
    "Lucas", "Maya", "Mila", "Noah", "Nora", "Omar", "Pablo", "Priya", "Ravi", "Rosa", "Sam",
    "Sara", "Sven", "Tariq", "Tess", "Umar", "Vera", "Yara",
)
LAST_NAMES = (
    "Adeyemi", "Bakker", "Bianchi", "Brown", "Costa", "de Vries", "Dubois", "Eriksen", "Fischer",
    "Garcia", "Hansen", "Haddad", "Ivanova", "Jansen", "Kowalski", "Kumar", "Larsen", "Lopez",
    "Martin", "Meyer", "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Peeters", "Petrov",
    "Rossi", "Santos", "Schmidt", "Silva", "Smit", "Tanaka", "van Dijk", "Visser", "Wagner",
    "Weber", "Wong", "Yilmaz", "Zhang",
)
COMPANIES = (
    "Acme Events", "Blue Harbor", "Cobalt Labs", "Delta Logistics", "Evergreen Health",
    "Foxglove Media", "Granite Bank", "Helix Bio", "Ion Energy", "Juniper Retail", "Kestrel Air",
    "Lumen Software", "Meridian Legal", "Northwind", "Orbit Telecom", "Pioneer Foods",
    "Quartz Insurance", "Riverbend University", "Summit Partners", "Tidewater Shipping",
    "Umbra Design", "Vertex Consulting", "Willow Foundation", "Zenith Robotics",
)
JOB_TITLES = (
    "Engineer", "Product Manager", "Designer", "Data Analyst", "Researcher", "Director",
    "Consultant", "Marketing Lead", "Sales Manager", "CTO", "CEO", "Student", "Teacher",
    "Nurse", "Architect", "Policy Advisor", "Event Manager", "Developer Advocate",
)

_M64 = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64 finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)
