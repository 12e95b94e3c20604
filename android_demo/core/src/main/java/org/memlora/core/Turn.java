package org.memlora.core;

/** One conversation turn: speaker, text, (LoCoMo) an optional caption of a shared photo, and whether the turn shared
 *  an image whose pixels the store keeps (MemLoRA-V: shown to extract as "[shares a photo]"). */
public final class Turn {
    public final String speaker;
    public final String text;
    public final String blipCaption;
    public final String diaId; // the turn's id, recorded as a memory's source turn (null: none)
    public final boolean sharedImage;

    public Turn(String speaker, String text, String blipCaption, String diaId) {
        this(speaker, text, blipCaption, diaId, false);
    }

    public Turn(String speaker, String text, String blipCaption, String diaId, boolean sharedImage) {
        this.speaker = speaker;
        this.text = text;
        this.blipCaption = blipCaption;
        this.diaId = diaId;
        this.sharedImage = sharedImage;
    }
}
