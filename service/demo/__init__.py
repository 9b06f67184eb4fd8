"""The local demo: demo patients and their measurements (``data``), the demo's OAuth clients
(``clients``) and the printed guide to try it (``guide``)."""
