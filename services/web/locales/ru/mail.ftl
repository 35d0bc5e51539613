# Предложения страниц почты.
mail-title = Почта ящика { $address }
mail-back-to-mailboxes = К списку ящиков
mail-back-to-folder = Назад в папку { $folder }
mail-last-sync = Последняя синхронизация:
mail-folders = Папки
mail-unread-count = { $count ->
    [one] { $count } непрочитанное письмо
    [few] { $count } непрочитанных письма
   *[many] { $count } непрочитанных писем
}
mail-unread-only = Только непрочитанные
mail-filter-apply = Показать
mail-section-unread = Непрочитанные
mail-section-read = Прочитанные
mail-col-from = От кого
mail-col-subject = Тема
mail-col-date = Получено
mail-no-subject = (без темы)
mail-unread-mark = (не прочитано)
mail-first-page = Первая страница
mail-empty = В этой папке пока нет писем.
mail-empty-unread = В этой папке нет непрочитанных писем.
mail-needs-grant = Чтобы читать почту этого ящика, нужно разрешение его владельца. Попросите владельца или администратора добавить вас в читатели.
mail-from = От кого
mail-to = Кому
mail-cc = Копия
mail-date = Дата
mail-images-blocked = { $count ->
    [one] Заблокировано { $count } внешнее изображение
    [few] Заблокированы { $count } внешних изображения
   *[many] Заблокировано { $count } внешних изображений
}
mail-images-show = Показать
mail-images-shown = Внешние изображения показаны только сейчас. Обновите страницу, чтобы снова их заблокировать.
mail-frame-title = Письмо: { $subject }
mail-frame-busy = Открыто слишком много писем сразу. Подождите немного и обновите страницу.
mail-links-hint = Ради вашей безопасности ссылки в письме отсюда не открываются: скопируйте ссылку, которой доверяете, и откройте её сами.
