"""UI strings of the floor map and the calibration page, in French and English (pure)."""

from __future__ import annotations

from collections.abc import Mapping

FLOOR_STRINGS: Mapping[str, Mapping[str, str]] = {
    "fr": {
        "nav_floor": "Plan du magasin",
        "nav_calibration": "Calibrage",
        "floor_hint": (
            "Nombre de clients consentants présents dans chaque zone, en direct."
            " Couleur des capteurs : leur état, comme sur la page des capteurs."
        ),
        "floor_map_label": "Plan du magasin, zones et capteurs",
        "street": "Rue",
        "door": "Porte",
        "present": "Présents",
        "node_down": "nœud déconnecté",
        "unregistered": "non enregistré",
        "box_state": "Capteur {id} : {state}",
        "zone_count": "{zone} : {count}",
        "cal_intro": (
            "Chaque capteur apprend sa correction RSSI et son exposant d'affaiblissement à"
            " partir des arrivées signalées dans une zone, des tournées de calibrage et des"
            " capteurs qui s'entendent entre eux. Une valeur apprise n'est utilisée qu'une fois"
            " assez sûre."
        ),
        "walk_title": "Tournée de calibrage",
        "walk_how": (
            "Prenez un téléphone dont l'application est activée, démarrez la tournée et"
            " saisissez le code dans l'application."
        ),
        "walk_start": "Démarrer une tournée",
        "walk_code": "Code à saisir dans l'application du téléphone de calibrage :",
        "walk_waiting": "En attente du téléphone…",
        "walk_joined": (
            "Téléphone relié. Allez au milieu de chaque zone, touchez « Je suis ici » et"
            " restez immobile, le téléphone à la main, jusqu'à ce que la barre soit pleine."
        ),
        "walk_here": "Je suis ici",
        "walk_here_zone": "Je suis ici : {zone}",
        "walk_progress": "Progression",
        "walk_step_done": "terminé",
        "walk_end": "Terminer la tournée",
        "learned_title": "Valeurs des capteurs",
        "offset_in_force": "Correction (dB)",
        "exponent_in_force": "Exposant",
        "learned": "Appris",
        "samples": "Échantillons",
        "sources": "Provenance",
        "source_walk": "tournée : {n}",
        "source_check_in": "arrivées : {n}",
        "source_box": "capteurs entre eux : {n}",
        "places": "Lieux",
        "residual": "Écart (dB)",
        "used": "Utilisé",
        "updated": "Mis à jour",
        "learned_none": "rien encore",
        "reset": "Réinitialiser",
        "reset_warning": (
            "Les valeurs apprises seront oubliées ; le capteur revient à la correction du"
            " fichier du magasin ou à celle saisie, et à l'exposant par défaut."
        ),
        "reset_confirm": "Oui, réinitialiser {id}",
        "reset_all": "Tout réinitialiser",
        "reset_all_confirm": "Oui, réinitialiser tous les capteurs",
    },
    "en": {
        "nav_floor": "Floor map",
        "nav_calibration": "Calibration",
        "floor_hint": (
            "Number of consenting customers present in each zone, live."
            " Box colours: their state, as on the scanners page."
        ),
        "floor_map_label": "Map of the shop, zones and boxes",
        "street": "Street",
        "door": "Door",
        "present": "Present",
        "node_down": "node disconnected",
        "unregistered": "not registered",
        "box_state": "Box {id}: {state}",
        "zone_count": "{zone}: {count}",
        "cal_intro": (
            "Each box learns its RSSI offset and path-loss exponent from check-ins at a zone,"
            " from calibration walks and from the other boxes it hears. A learned value is used"
            " only once it is sure enough."
        ),
        "walk_title": "Calibration walk",
        "walk_how": (
            "Take a phone whose app is turned on, start the walk and type the code into the app."
        ),
        "walk_start": "Start a walk",
        "walk_code": "Code to type into the calibration phone's app:",
        "walk_waiting": "Waiting for the phone…",
        "walk_joined": (
            "Phone joined. Go to the middle of each zone, tap “I am here” and stand still,"
            " phone in hand, until the bar is full."
        ),
        "walk_here": "I am here",
        "walk_here_zone": "I am here: {zone}",
        "walk_progress": "Progress",
        "walk_step_done": "done",
        "walk_end": "End the walk",
        "learned_title": "Box values",
        "offset_in_force": "Offset (dB)",
        "exponent_in_force": "Exponent",
        "learned": "Learned",
        "samples": "Samples",
        "sources": "From",
        "source_walk": "walk: {n}",
        "source_check_in": "check-ins: {n}",
        "source_box": "boxes hearing each other: {n}",
        "places": "Places",
        "residual": "Residual (dB)",
        "used": "Used",
        "updated": "Updated",
        "learned_none": "nothing yet",
        "reset": "Reset",
        "reset_warning": (
            "The learned values will be forgotten; the box goes back to the store file's or"
            " the typed offset, and to the default exponent."
        ),
        "reset_confirm": "Yes, reset {id}",
        "reset_all": "Reset all",
        "reset_all_confirm": "Yes, reset every box",
    },
}
