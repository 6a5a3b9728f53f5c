"""Parent crystals: where every doped sample starts.

Every source shares one interface (``ParentSource.parents()`` → ordered list of ``Parent``,
``base``) and is chosen by ``conf/parents/<name>.yaml``:

* ``builtin.BuiltinParents``: an offline, deterministic generator. Common semiconductor
  prototypes (diamond to kesterite and double perovskite) decorated with element choices whose
  pymatgen oxidation states balance the charge; lattice constants guessed from radii (the
  generation relaxes them).
* ``files.FileParents``: a folder of CIF / POSCAR / extxyz files.
* ``materials_project.MaterialsProjectParents``: structures through ``mp-api`` (key, network).
* ``ncrystal.NCrystalParents``: the crystals of NCrystal's standard library (reference DOS).
* ``melt_quench.MeltQuenchParents``: disordered Si hosts for the Si(1-x)Ge(x) set.
* ``mgb2.MgB2Parents``: MgB₂ for the Al-doped set.
"""
