# A package so that setuptools maps templates/ into the wheel as provision.templates.
